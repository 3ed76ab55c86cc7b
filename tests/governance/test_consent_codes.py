"""Every DUO code ccdp knows, one test each, driven from the term table itself (issue 26).

The table (`ccdp.terminology.duo.duo_terms`, DUO's published terms) lists every permission and
modifier a consent may hold; each one is checked here against what DUO's definition says it
must do (docs/consent.md gives the same table for the board), independently of
`ccdp.governance.consent`'s own tables: the requirement codes are the ones a project can declare
met (`ccdp.wire.data_use.Requirement`). Dropping a code from consent.py's REQUIREMENTS (RS, TS,
...) lets a consent carrying it permit a project that never declared it met: its test fails.
"""

from __future__ import annotations

from typing import get_args

import pytest

from ccdp.governance import consent as consent_module
from ccdp.governance.consent import Consent, permits
from ccdp.terminology.duo import canonical, duo_terms
from ccdp.wire.data_use import DataUse, Requirement

LEUKAEMIA = "MONDO:0005059"
REQUIREMENT_CODES: tuple[str, ...] = get_args(Requirement)
NOT_COMMERCIAL = {"NPUNCU", "NPU", "NCU"}
GENETIC_ONLY = {"GSO"}
# forbid purposes no declared use has (methods, ancestry research) or allow more (clinical care)
NO_RESEARCH_RESTRICTION = {"NMDS", "NPOA", "CC"}
# DUO's permissions and the declared uses each permits (GRU ⊃ HMB ⊃ DS; POA none of them)
PERMISSIONS = {
    "NRES": {"GRU", "HMB", "DS"},
    "GRU": {"GRU", "HMB", "DS"},
    "HMB": {"HMB", "DS"},
    "DS": {"DS"},  # with its disease (below), DS on leukaemia permits DS on leukaemia
    "POA": set(),
}


def codes(kind: str) -> list[str]:
    terms = duo_terms()
    return sorted(terms.loc[terms["kind"] == kind, "code"])


def use(permission: str, **kw: object) -> DataUse:
    disease = LEUKAEMIA if permission == "DS" else None
    return DataUse.model_validate({"permission": permission, "disease": disease, **kw})


def test_every_code_in_the_table_has_an_expected_effect() -> None:
    """A DUO term added to the table must be given its effect here (and in consent.py)."""
    modifiers = set(codes("modifier"))
    kinds = [set(REQUIREMENT_CODES), NOT_COMMERCIAL, GENETIC_ONLY, NO_RESEARCH_RESTRICTION]
    assert set().union(*kinds) == modifiers
    assert sum(len(k) for k in kinds) == len(modifiers)  # each modifier in one kind only
    assert set(codes("permission")) == set(PERMISSIONS)


def test_consent_py_tables_name_the_same_codes() -> None:
    """consent.py's tables, read back as DUO codes, are exactly the expected kinds."""
    by_id = {canonical(c): c for c in duo_terms()["code"]}
    assert {by_id[i] for i in consent_module.REQUIREMENTS} == set(REQUIREMENT_CODES)
    assert all(by_id[i] == c for i, c in consent_module.REQUIREMENTS.items())
    assert {by_id[i] for i in consent_module.NOT_COMMERCIAL} == NOT_COMMERCIAL
    assert {by_id[i] for i in consent_module.GENETIC_ONLY} == GENETIC_ONLY
    assert {by_id[i] for i in consent_module.PERMITS} == set(PERMISSIONS)


@pytest.mark.parametrize("code", codes("modifier"))
@pytest.mark.parametrize("permission", ["GRU", "HMB", "DS"])
def test_each_modifier_restricts_what_duo_says(code: str, permission: str) -> None:
    """The modifier on a consent whose permission covers the use (so only the modifier can
    refuse): a requirement refuses until the project declares that code met (declaring every
    other requirement does not do), a non-commercial code refuses a commercial use, GSO
    refuses every use, NMDS/NPOA/CC refuse none."""
    text = f"{permission} MONDO:0005059 {code}" if permission == "DS" else f"{permission} {code}"
    others = tuple(r for r in REQUIREMENT_CODES if r != code)
    assert permits(permission if permission != "DS" else f"DS {LEUKAEMIA}", use(permission))
    if code in REQUIREMENT_CODES:
        assert not permits(text, use(permission))
        assert not permits(text, use(permission, meets=others))
        assert permits(text, use(permission, meets=(code,)))
        why = Consent.parse(text).why_not(use(permission))
        assert why is not None and code in why
    elif code in NOT_COMMERCIAL:
        assert not permits(text, use(permission, commercial=True))
        assert permits(text, use(permission, commercial=False))
    elif code in GENETIC_ONLY:
        assert not permits(text, use(permission))
        assert not permits(text, use(permission, meets=REQUIREMENT_CODES))
    else:
        assert code in NO_RESEARCH_RESTRICTION
        assert permits(text, use(permission))
        assert permits(text, use(permission, commercial=True))


@pytest.mark.parametrize("code", REQUIREMENT_CODES)
def test_a_requirement_is_checked_by_its_duo_identifier_too(code: str) -> None:
    """The same decision when the consent names the modifier by identifier (DUO:00000nn)."""
    text = f"DUO:0000042 {canonical(code)}"
    assert not permits(text, use("GRU"))
    assert permits(text, use("GRU", meets=(code,)))


def test_every_requirement_on_one_consent_must_all_be_met() -> None:
    text = "GRU " + " ".join(REQUIREMENT_CODES)
    assert permits(text, use("GRU", meets=REQUIREMENT_CODES))
    for code in REQUIREMENT_CODES:
        short = tuple(r for r in REQUIREMENT_CODES if r != code)
        assert not permits(text, use("GRU", meets=short)), code


@pytest.mark.parametrize("permission", codes("permission"))
@pytest.mark.parametrize("declared", ["GRU", "HMB", "DS"])
def test_each_permission_permits_the_nested_uses(permission: str, declared: str) -> None:
    text = f"DS {LEUKAEMIA}" if permission == "DS" else permission
    assert permits(text, use(declared)) is (declared in PERMISSIONS[permission])

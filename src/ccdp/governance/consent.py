"""Does a child's consent (DUO codes in `patient.consent`) permit a project's declared data use?

Decided once per distinct consent string (a store holds a handful), then applied as SQL over the
patient table, so every analysis of a project reads only the patients their consent permits.
DUO's semantics, as implemented here (docs/consent.md says the same for the board):

* permissions nest GRU ⊃ HMB ⊃ DS: GRU consent permits GRU, HMB and DS uses; HMB permits HMB and
  DS uses; DS on disease X permits only DS uses on X or a subclass of X (terminology/mondo.py);
  DS naming no disease permits nothing (its disease cannot be checked). NRES (no restriction)
  permits every use; POA (population origins or ancestry only) permits none of GRU/HMB/DS.
  Several permissions in one consent: any of them may permit.
* NPUNCU, NPU, NCU exclude a commercial (or for-profit) use.
* COL, IRB, PUB, GS, MOR, RTN, US, IS, PS, RS, TS each state a requirement on the requester
  (DUO's definitions, e.g. IRB "the requestor must provide documentation of local IRB/ERB
  approval"): consent carrying one permits a use only when the project declares it met
  (`DataUse.meets`), the board having checked the evidence.
* GSO (genetic studies only) excludes every use here: no declared use is a genetic study.
* NMDS (no methods research), NPOA (no ancestry research) forbid purposes no DataUse declares;
  CC (clinical care use) allows more: none of them restricts a GRU/HMB/DS research use.
* A consent string that is not valid DUO permits nothing (the quality report lists it); no
  consent at all permits nothing under policy `consent: required` and does not restrict under
  `consent: statutory` (a registry working under a legal basis rather than consent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ccdp.terminology.duo import ConsentError, canonical, parse_consent
from ccdp.terminology.mondo import is_a
from ccdp.wire.data_use import DataUse

ConsentMode = Literal["required", "statutory"]

NRES, GRU, HMB, DS, POA = (
    "DUO:0000004",
    "DUO:0000042",
    "DUO:0000006",
    "DUO:0000007",
    "DUO:0000011",
)
# the uses each permission permits (DS on a disease is further checked by the disease)
PERMITS: dict[str, frozenset[str]] = {
    NRES: frozenset({"GRU", "HMB", "DS"}),
    GRU: frozenset({"GRU", "HMB", "DS"}),
    HMB: frozenset({"HMB", "DS"}),
    DS: frozenset({"DS"}),
    POA: frozenset(),
}
NOT_COMMERCIAL = frozenset({"DUO:0000018", "DUO:0000045", "DUO:0000046"})  # NPUNCU, NPU, NCU
GENETIC_ONLY = frozenset({"DUO:0000016"})  # GSO
# modifier identifier -> the requirement code a project must declare met
REQUIREMENTS: dict[str, str] = {
    str(canonical(code)): code
    for code in ("COL", "IRB", "PUB", "GS", "MOR", "RTN", "US", "IS", "PS", "RS", "TS")
}


@dataclass(frozen=True)
class Consent:
    """One consent string, parsed: DUO identifiers and the diseases its DS permission names."""

    codes: frozenset[str]
    diseases: tuple[str, ...]

    @classmethod
    def parse(cls, text: str | None) -> Consent:
        """Raises ConsentError (from terminology.duo) naming the token and rule."""
        terms = parse_consent(text)
        return cls(
            codes=frozenset(t for t in terms if t.startswith("DUO:")),
            diseases=tuple(t for t in terms if t.startswith("MONDO:")),
        )

    @property
    def empty(self) -> bool:
        return not self.codes

    def why_not(self, use: DataUse) -> str | None:
        """None when this consent permits `use`, else the reason (for docs, tests, operators)."""
        if not any(self._permission_permits(p, use) for p in self.codes if p in PERMITS):
            return f"no permission of the consent covers a {use.permission} use"
        if use.commercial and self.codes & NOT_COMMERCIAL:
            return "the consent excludes commercial or for-profit use (NPU/NCU/NPUNCU)"
        if self.codes & GENETIC_ONLY:
            return "the consent is for genetic studies only (GSO)"
        unmet = sorted(REQUIREMENTS[c] for c in self.codes if c in REQUIREMENTS)
        unmet = [r for r in unmet if r not in use.meets]
        if unmet:
            return f"the project does not declare the requirement(s) met: {', '.join(unmet)}"
        return None

    def _permission_permits(self, permission: str, use: DataUse) -> bool:
        if use.permission not in PERMITS[permission]:
            return False
        if permission != DS:
            return True
        # DS consent permits DS uses only, on its disease or a subclass of it
        assert use.disease is not None  # DataUse requires the disease with DS
        return any(is_a(use.disease, x) for x in self.diseases)


def permits(text: str | None, use: DataUse, mode: ConsentMode = "required") -> bool:
    """Does a patient with consent `text` belong to a project with data use `use`?"""
    try:
        consent = Consent.parse(text)
    except ConsentError:
        return False  # not valid DUO: no use can be shown to be consented
    if consent.empty:
        return mode == "statutory"
    return consent.why_not(use) is None


def consent_filter(
    consents: Iterable[str | None], use: DataUse, mode: ConsentMode, column: str = "consent"
) -> tuple[str, list[Any]]:
    """SQL condition on the patient table's `column` (with its parameters) that keeps exactly
    the patients whose consent permits `use`, decided once for each distinct value given."""
    permitted: list[str] = []
    null_ok = False
    for value in set(consents):
        if value is None:
            null_ok = permits(None, use, mode)
        elif permits(value, use, mode):
            permitted.append(value)
    permitted.sort()
    ors: list[str] = []
    if permitted:
        ors.append(f'"{column}" IN (' + ", ".join("?" for _ in permitted) + ")")
    if null_ok:
        ors.append(f'"{column}" IS NULL')
    return ("(" + " OR ".join(ors) + ")") if ors else "FALSE", permitted


__all__ = ["Consent", "ConsentMode", "consent_filter", "permits"]

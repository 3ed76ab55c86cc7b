"""GA4GH Data Use Ontology (DUO) codes: the consent a patient gave, in machine-readable form.

`patient.consent` holds space-separated DUO identifiers (a permission such as DUO:0000042 general
research use, plus modifiers such as DUO:0000018 not-for-profit use only). A disease-specific
permission names its disease right after it: `DUO:0000007 MONDO:0004992` (DS on cancer).
Governance matches a study's intended use against them (ccdp.governance.consent); this module
checks the codes and knows the is-a hierarchy.
"""

from __future__ import annotations

import re
from functools import cache

import pandas as pd

from ccdp.errors import CcdpError
from ccdp.terminology.datafiles import data_path

_ID_RE = re.compile(r"^DUO[:_](\d{7})$", re.IGNORECASE)
_MONDO_RE = re.compile(r"^MONDO[:_](\d{7})$", re.IGNORECASE)
DS = "DUO:0000007"  # disease specific research: the one permission that names a disease


class ConsentError(CcdpError):
    """A consent string holds something that is not a usable DUO code."""


@cache
def duo_terms() -> pd.DataFrame:
    """Columns id (`DUO:0000042`), code (`GRU`), label, kind (permission/modifier/root), parent."""
    with data_path("duo.csv").open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str, keep_default_na=False)


@cache
def _by_id() -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in duo_terms().to_dict("records")}


@cache
def _by_code() -> dict[str, str]:
    return {row["code"].upper(): row["id"] for row in duo_terms().to_dict("records")}


def canonical(token: str) -> str | None:
    """`duo:0000042`, `DUO_0000042` or the shorthand `GRU` -> `DUO:0000042`; None if unknown."""
    token = token.strip()
    m = _ID_RE.match(token)
    if m:
        ident = f"DUO:{m.group(1)}"
        return ident if ident in _by_id() else None
    return _by_code().get(token.upper())


def label(ident: str) -> str:
    """Label of a DUO identifier."""
    return _by_id()[ident]["label"]


def ancestors(ident: str) -> list[str]:
    """The identifier and every term above it (is-a), nearest first."""
    chain: list[str] = []
    current: str | None = ident
    while current:
        chain.append(current)
        current = _by_id()[current]["parent"] or None
    return chain


def parse_consent(text: str | None) -> list[str]:
    """Split a consent string into canonical DUO identifiers, checking each one.

    Tokens are separated by spaces, commas or semicolons. A MONDO term (`MONDO:0004992`) is kept,
    canonical, right after the DS permission it qualifies. Raises ConsentError naming the token
    and the rule when a token is not a known DUO term, when a root class is used, when a disease
    does not follow DS, or when modifiers are given without a data use permission. An empty or
    missing consent gives [].
    """
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return []
    tokens = [t for t in re.split(r"[\s,;]+", str(text).strip()) if t]
    out: list[str] = []
    previous: str | None = None
    for token in tokens:
        disease = _MONDO_RE.match(token)
        if disease:
            if previous != DS:
                raise ConsentError(
                    f"consent '{token}': a disease term follows only {DS} (disease specific "
                    f"research), e.g. '{DS} MONDO:0004992'"
                )
            term = f"MONDO:{disease.group(1)}"
            if term not in out:
                out.append(term)
            previous = term
            continue
        ident = canonical(token)
        if ident is None:
            raise ConsentError(
                f"consent '{token}': not a GA4GH DUO term (expected DUO:nnnnnnn or a DUO "
                "shorthand such as GRU, HMB, NPUNCU)"
            )
        if _by_id()[ident]["kind"] == "root":
            raise ConsentError(
                f"consent '{token}': {ident} ({label(ident)}) is an abstract class; "
                "use a specific permission or modifier"
            )
        if ident not in out:
            out.append(ident)
        previous = ident
    kinds = {_by_id()[i]["kind"] for i in out if i.startswith("DUO:")}
    if "modifier" in kinds and "permission" not in kinds:
        raise ConsentError(
            f"consent '{text}': modifiers {', '.join(out)} need a data use permission "
            "(e.g. DUO:0000042 general research use)"
        )
    return out


def valid_consent(text: str | None) -> bool:
    """True when parse_consent accepts the string."""
    try:
        parse_consent(text)
    except ConsentError:
        return False
    return True

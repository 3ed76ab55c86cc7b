"""The partnership's diseases as MONDO terms with their is-a parents (data/mondo_diseases.csv).

Disease-specific consent (DUO DS) is matched by this hierarchy: DS on X permits research on X or
on any subclass of X.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from ccdp.terminology.datafiles import data_path


@cache
def mondo_diseases() -> pd.DataFrame:
    """Columns id (`MONDO:0004992`), label, parent (nearest listed ancestor), iccc, checked."""
    with data_path("mondo_diseases.csv").open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str, keep_default_na=False)


@cache
def _parents() -> dict[str, str]:
    return dict(zip(mondo_diseases()["id"], mondo_diseases()["parent"], strict=True))


@cache
def disease_ancestors(term: str) -> tuple[str, ...]:
    """The term and every listed term above it, nearest first (an unlisted term: itself only)."""
    chain: list[str] = []
    current: str | None = term
    while current and current not in chain:
        chain.append(current)
        current = _parents().get(current) or None
    return tuple(chain)


def is_a(term: str, ancestor: str) -> bool:
    """True when `term` is `ancestor` or one of its subclasses."""
    return ancestor in disease_ancestors(term)

"""ICD-O-3 code lists and vectorised normalisers for topography and morphology codes.

Registries write the same code many ways (`C42.1`, `C421`, `c42.1`; `9836/3`, `98363`, `M-9836/3`).
These functions bring them to one form so that later stages compare like with like. They never
raise on bad values: unparseable input becomes NaN/NA and the `*_problem` helpers say why.
Work is done once per distinct value (`pd.factorize`), so a column of millions of rows with a few
hundred distinct codes costs a few hundred regex matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ccdp.terminology.datafiles import data_path

BEHAVIOURS: tuple[int, ...] = (0, 1, 2, 3, 6, 9)
"""ICD-O-3 behaviour codes: benign, uncertain, in situ, malignant, metastatic, uncertain primary."""

_TOPO_RE = re.compile(r"^C(\d{2})\.?(\d)$")
_MORPH_RE = re.compile(r"^(?:M-?)?(\d{4})(?:/?(\d))?$")
_INTEGRAL_FLOAT_RE = re.compile(r"^(\d+)\.0+$")


@cache
def topography_codes() -> pd.DataFrame:
    """The ICD-O-3 topography list: columns `code` (`C42.1`) and `label`."""
    with data_path("icdo3_topography.csv").open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str)


@cache
def morphology_codes() -> pd.DataFrame:
    """The ICD-O-3(.1) morphology list: `code` (4 digits), `behaviours`, `label`, `revision`."""
    with data_path("icdo3_morphology.csv").open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str)


@cache
def _topography_set() -> frozenset[str]:
    return frozenset(topography_codes()["code"])


@cache
def _morphology_set() -> frozenset[str]:
    return frozenset(morphology_codes()["code"])


def as_series(values: Any) -> pd.Series:
    """A scalar, list, array or Series as a Series with a fresh index (the classifiers' input)."""
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if np.isscalar(values) or values is None:
        values = [values]
    return pd.Series(list(values) if not isinstance(values, np.ndarray) else values)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean_text(value: Any) -> str:
    """Text form of one raw value: integral floats (9836.0, read from CSV) lose the '.0'."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip().upper().replace(" ", "")
    m = _INTEGRAL_FLOAT_RE.match(text)
    return m.group(1) if m else text


def _per_unique(values: Any, fn: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray]:
    """Apply `fn` once per distinct value; return (codes per row, results per distinct value)."""
    series = as_series(values)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    results = np.empty(len(uniques) + 1, dtype=object)
    for i, u in enumerate(uniques):
        results[i] = fn(u)
    results[-1] = fn(None)  # the NA sentinel (-1) indexes the last slot
    return codes, results


def parse_topography(value: Any) -> str | None:
    """One topography code in the form `C42.1`, None when it cannot be read (ICCC uses it)."""
    if _is_missing(value):
        return None
    m = _TOPO_RE.match(_clean_text(value))
    return f"C{m.group(1)}.{m.group(2)}" if m else None


def parse_morphology(value: Any) -> tuple[str | None, int | None]:
    """One morphology as (`9836`, behaviour or None); (None, None) when it cannot be read."""
    if _is_missing(value):
        return (None, None)
    m = _MORPH_RE.match(_clean_text(value))
    if not m:
        return (None, None)
    return (m.group(1), int(m.group(2)) if m.group(2) is not None else None)


def normalise_topography(values: pd.Series) -> pd.Series:
    """`C42.1`, `C421`, `c42.1`, ` C42.1 ` -> `C42.1`; anything unparseable -> NaN (never raises).

    Only the form is checked here; `valid_topography` also checks the code is in ICD-O-3.
    """
    codes, parsed = _per_unique(values, parse_topography)
    out = parsed[codes]
    index = values.index if isinstance(values, pd.Series) else None
    return pd.Series(np.where(pd.isna(out), np.nan, out), index=index, dtype=object)


def normalise_morphology(values: pd.Series) -> pd.DataFrame:
    """`9836/3`, `98363`, `9836`, `M-9836/3`, `M98363` -> morphology `9836`, behaviour 3 (Int64).

    Unparseable values give NaN morphology and NA behaviour; a bare 4-digit code gives NA behaviour.
    """
    codes, parsed = _per_unique(values, parse_morphology)
    morph = np.array([p[0] for p in parsed], dtype=object)[codes]
    beh = np.array([p[1] if p[1] is not None else -1 for p in parsed], dtype=np.int64)[codes]
    behaviour = pd.Series(beh, dtype="Int64").mask(beh < 0)
    frame = pd.DataFrame(
        {
            "morphology": pd.Series(np.where(pd.isna(morph), np.nan, morph), dtype=object),
            "behaviour": behaviour,
        }
    )
    if isinstance(values, pd.Series):
        frame.index = values.index
    return frame


def valid_topography(values: Iterable[Any]) -> np.ndarray:
    """True where the value is (a spelling of) an ICD-O-3 topography code C00.0-C80.9."""
    norm = normalise_topography(as_series(values))
    return norm.isin(_topography_set()).to_numpy(dtype=bool)


def valid_morphology(values: Iterable[Any]) -> np.ndarray:
    """True where the value is (a spelling of) an ICD-O-3(.1) morphology code, with a valid
    behaviour digit if one is given."""
    norm = normalise_morphology(as_series(values))
    known = norm["morphology"].isin(_morphology_set()).to_numpy(dtype=bool)
    beh = norm["behaviour"]
    beh_ok = (beh.isna() | beh.isin(BEHAVIOURS)).to_numpy(dtype=bool)
    return known & beh_ok


def topography_label(codes: Iterable[Any]) -> pd.Series:
    """Title of each topography code (any accepted spelling); NaN where unknown."""
    table = topography_codes().set_index("code")["label"]
    return normalise_topography(as_series(codes)).map(table)


def morphology_label(codes: Iterable[Any]) -> pd.Series:
    """Preferred term of each morphology code (any accepted spelling); NaN where unknown."""
    table = morphology_codes().set_index("code")["label"]
    return normalise_morphology(as_series(codes))["morphology"].map(table)


def topography_problem(value: Any) -> str | None:
    """Why one topography value is unusable, naming the field and the rule; None if it is fine."""
    if _is_missing(value) or str(value).strip() == "":
        return "topography: missing (required)"
    code = parse_topography(value)
    if code is None:
        return f"topography '{str(value).strip()}': not ICD-O-3 (expected Cnn.n, e.g. C42.1)"
    if code not in _topography_set():
        return f"topography '{str(value).strip()}': {code} is not an ICD-O-3 topography code"
    return None


def morphology_problem(value: Any) -> str | None:
    """Why one morphology value is unusable, naming the field and the rule; None if it is fine."""
    if _is_missing(value) or str(value).strip() == "":
        return "morphology: missing (required)"
    code, beh = parse_morphology(value)
    raw = _clean_text(value)
    if code is None:
        return (
            f"morphology '{str(value).strip()}': not ICD-O-3 "
            "(expected 4 digits with optional /behaviour, e.g. 9836 or 9836/3)"
        )
    if code not in _morphology_set():
        return f"morphology '{raw}': {code} is not an ICD-O-3 morphology code"
    if beh is not None and beh not in BEHAVIOURS:
        return f"morphology '{raw}': behaviour digit {beh} not in 0,1,2,3,6,9"
    return None


def parse_behaviour(value: Any) -> int | None:
    """One behaviour value as an int, or None when missing or not a single digit."""
    if _is_missing(value):
        return None
    text = _clean_text(value).lstrip("/")
    return int(text) if text.isdigit() and len(text) == 1 else None


def behaviour_problem(value: Any) -> str | None:
    """Why one behaviour value is unusable (None when missing: the caller decides if required)."""
    if _is_missing(value) or str(value).strip() == "":
        return None
    beh = parse_behaviour(value)
    if beh is None or beh not in BEHAVIOURS:
        shown = _clean_text(value)
        shown = shown if shown.isdigit() else f"'{str(value).strip()}'"
        return f"behaviour {shown}: not in 0,1,2,3,6,9"
    return None


def per_value(values: Any, fn: Callable[[Any], Any]) -> np.ndarray:
    """`fn` applied to each row's value, computed once per distinct value (object array)."""
    codes, results = _per_unique(values, fn)
    return results[codes]

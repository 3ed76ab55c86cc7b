"""ICCC-3 recoder: (morphology, topography, behaviour) -> group, subgroup, extended code, recode.

The rules are data (`data/iccc_rules.csv`, one row per row of the published SEER recode tables,
first match wins). They are compiled once per edition into a dense lookup table indexed by
(histology 8000-9999, site class, behaviour digit), where a *site class* is a stretch of site codes
that no rule boundary splits. Classifying is then a normalisation per distinct input value plus
one fancy-indexing gather per row, with no Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from ccdp.errors import CcdpError
from ccdp.terminology import icdo3

EDITIONS: tuple[str, ...] = ("2017", "who2008")
"""`2017`: ICCC-3 as updated by IARC in 2017 (default); `who2008`: SEER ICD-O-3/WHO 2008 recode."""

UNCLASSIFIED = "999"
UNCLASSIFIED_LABEL = (
    "Not classified by ICCC-3 (site/histology/behaviour outside the classification)"
)
OUTPUT_COLUMNS: tuple[str, ...] = (
    "iccc_group",
    "iccc_subgroup",
    "iccc_extended",
    "iccc_recode",
    "iccc_label",
    "error",
)
_N_MORPH = 2000  # histology codes 8000-9999
_N_SITE = 810  # site codes C00.0-C80.9 as integers 0-809
_N_BEH = 10


class TerminologyError(CcdpError):
    """A terminology request that cannot be answered at all (unknown edition, broken rule data)."""


class IcccClassification(BaseModel):
    """The ICCC-3 classification of one tumour (all fields None when `error` is set)."""

    edition: str
    morphology: str | None
    topography: str | None
    behaviour: int | None
    iccc_group: str | None
    iccc_subgroup: str | None
    iccc_extended: str | None
    iccc_recode: str | None
    iccc_label: str | None
    subgroup_label: str | None
    group_label: str | None
    error: str | None


def _data_csv(name: str) -> pd.DataFrame:
    with icdo3._data_path(name).open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str, keep_default_na=False)


@cache
def iccc_codes(edition: str = "2017") -> pd.DataFrame:
    """The categories of one edition: extended code, recode, group, subgroup, division, labels."""
    _check_edition(edition)
    codes = _data_csv("iccc_codes.csv")
    return codes[codes["edition"] == edition].reset_index(drop=True)


@cache
def iccc_rules(edition: str = "2017") -> pd.DataFrame:
    """The rule rows of one edition, in the order they are tried."""
    _check_edition(edition)
    rules = _data_csv("iccc_rules.csv")
    rules = rules[rules["edition"] == edition].copy()
    rules["rule"] = rules["rule"].astype(int)
    return rules.sort_values("rule").reset_index(drop=True)


def _check_edition(edition: str) -> None:
    if edition not in EDITIONS:
        raise TerminologyError(f"ICCC edition '{edition}': not one of {', '.join(EDITIONS)}")


def _site_int(code: str) -> int:
    """`C42.1` -> 421."""
    return int(code[1:3]) * 10 + int(code[4])


def _site_int_or_minus_one(value: Any) -> int:
    code = icdo3._parse_topography(value)
    return _site_int(code) if code is not None else -1


def expand_morphology(spec: str) -> list[int]:
    """`9811-9818 9837` -> [9811, ..., 9818, 9837]."""
    out: list[int] = []
    for token in spec.split():
        lo, _, hi = token.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def expand_topography(spec: str) -> list[tuple[int, int]]:
    """`C00.0-C41.9 C42.2` -> inclusive integer site ranges [(0, 419), (422, 422)]."""
    out: list[tuple[int, int]] = []
    for token in spec.split():
        lo, _, hi = token.partition("-")
        out.append((_site_int(lo), _site_int(hi or lo)))
    return out


@dataclass(frozen=True)
class _Compiled:
    table: np.ndarray  # int16 [morph, site_class, behaviour] -> row of `outputs` (0 = unclassified)
    site_class: np.ndarray  # int16 [site int] -> site class
    outputs: dict[str, np.ndarray]  # column -> object array indexed by table values
    subgroup_label: np.ndarray
    group_label: np.ndarray


@cache
def _compiled(edition: str) -> _Compiled:
    """Compile the edition's rules into the lookup table (first matching rule wins)."""
    rules = iccc_rules(edition)
    codes = iccc_codes(edition)
    ranges = [expand_topography(t) for t in rules["topography"]]
    cuts = {0, _N_SITE}
    for rs in ranges:
        for lo, hi in rs:
            cuts.update((lo, hi + 1))
    bounds = np.array(sorted(cuts))
    site_class = (np.searchsorted(bounds, np.arange(_N_SITE), side="right") - 1).astype(np.int16)
    n_class = len(bounds) - 1

    ext_index = {ext: i + 1 for i, ext in enumerate(codes["extended"])}
    table = np.zeros((_N_MORPH, n_class, _N_BEH), dtype=np.int16)
    # Paint rules from last to first so that the first matching rule is the one left standing.
    for i in range(len(rules) - 1, -1, -1):
        row = rules.iloc[i]
        if row["extended"] not in ext_index:
            raise TerminologyError(
                f"iccc_rules.csv rule {row['rule']} ({edition}): extended code "
                f"{row['extended']} is not in iccc_codes.csv"
            )
        morph = np.array(expand_morphology(row["morphology"])) - 8000
        classes = np.unique(np.concatenate([site_class[lo : hi + 1] for lo, hi in ranges[i]]))
        behs = np.array([int(b) for b in row["behaviour"].split()])
        table[np.ix_(morph, classes, behs)] = ext_index[row["extended"]]

    def column(values: pd.Series, unclassified: Any) -> np.ndarray:
        col = np.empty(len(values) + 1, dtype=object)
        col[0] = unclassified
        col[1:] = [v if v != "" else None for v in values]
        return col

    outputs = {
        "iccc_group": column(codes["group"], None),
        "iccc_subgroup": column(codes["subgroup"], None),
        "iccc_extended": column(codes["extended"], UNCLASSIFIED),
        "iccc_recode": column(codes["recode"], UNCLASSIFIED),
        "iccc_label": column(codes["label"], UNCLASSIFIED_LABEL),
    }
    return _Compiled(
        table=table,
        site_class=site_class,
        outputs=outputs,
        subgroup_label=column(codes["subgroup_label"], None),
        group_label=column(codes["group_label"], None),
    )


def _join_errors(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Row-wise '; '-join of per-field messages (None where a field is fine)."""
    err = np.full(n, None, dtype=object)
    for part in parts:
        has = pd.notna(part)
        if not has.any():
            continue
        both = has & pd.notna(err)
        err[both] = err[both] + "; " + part[both]
        only = has & ~both
        err[only] = part[only]
    return err


def _inputs(morphology: Any, topography: Any, behaviour: Any) -> tuple[pd.Series, ...]:
    series = [icdo3._as_series(v) for v in (morphology, topography, behaviour)]
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        raise TerminologyError(
            "classify: morphology, topography and behaviour must have the same length "
            f"(got {', '.join(str(len(s)) for s in series)})"
        )
    return tuple(series)


def _classify_arrays(
    morphology: Any, topography: Any, behaviour: Any, edition: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Classification columns plus the compiled-table row index of each input row."""
    _check_edition(edition)
    compiled = _compiled(edition)
    m_raw, t_raw, b_raw = _inputs(morphology, topography, behaviour)
    n = len(m_raw)

    morph = icdo3.normalise_morphology(m_raw)
    site_ints = icdo3.per_value(t_raw, _site_int_or_minus_one).astype(np.int64)
    beh_given = icdo3.per_value(b_raw, icdo3.parse_behaviour)
    beh_in_morph = morph["behaviour"].to_numpy(dtype=float, na_value=np.nan)

    m_err = icdo3.per_value(m_raw, icdo3.morphology_problem)
    t_err = icdo3.per_value(t_raw, icdo3.topography_problem)
    b_err = icdo3.per_value(b_raw, icdo3.behaviour_problem)

    given = pd.notna(beh_given)
    beh = np.where(given, beh_given, beh_in_morph).astype(float)
    missing = pd.isna(beh) & pd.isna(b_err)
    conflict = given & ~np.isnan(beh_in_morph) & (beh_given != beh_in_morph)
    x_err = np.full(n, None, dtype=object)
    x_err[missing] = "behaviour: missing (required)"
    if conflict.any():
        idx = np.flatnonzero(conflict)
        x_err[idx] = [
            f"behaviour {int(beh_given[i])} contradicts morphology '{m_raw.iloc[i]}'" for i in idx
        ]
    error = _join_errors([m_err, t_err, b_err, x_err], n)
    ok = pd.isna(error)

    m_idx = np.zeros(n, dtype=np.int64)
    s_int = np.zeros(n, dtype=np.int64)
    b_idx = np.zeros(n, dtype=np.int64)
    if ok.any():
        m_idx[ok] = morph["morphology"].to_numpy()[ok].astype(np.int64) - 8000
        s_int[ok] = site_ints[ok]
        b_idx[ok] = beh[ok].astype(np.int64)
    row = compiled.table[m_idx, compiled.site_class[s_int], b_idx].astype(np.int64)
    row[~ok] = -1

    out: dict[str, Any] = {}
    for name, col in compiled.outputs.items():
        values = col[np.where(ok, row, 0)]
        values[~ok] = None
        out[name] = values
    out["error"] = error
    frame = pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))
    return frame, row


def classify(
    morphology: Any, topography: Any, behaviour: Any, edition: str = "2017"
) -> pd.DataFrame:
    """Classify tumours into ICCC-3 (vectorised; bad rows get an `error`, never an exception).

    Inputs are array-likes of equal length in any accepted spelling (see `icdo3`); a morphology
    written with its behaviour (`9836/3`) supplies the behaviour where `behaviour` is missing.
    Returns one row per input row with columns iccc_group (I-XII), iccc_subgroup (Ia-XIIb, V),
    iccc_extended (3 digits), iccc_recode (011-122; 999 unclassified), iccc_label and error.
    Rows with an error have all ICCC columns empty; valid rows outside the classification get 999.
    """
    frame, _ = _classify_arrays(morphology, topography, behaviour, edition)
    return frame


def classify_one(
    morphology: Any, topography: Any, behaviour: Any = None, edition: str = "2017"
) -> IcccClassification:
    """Classify a single tumour, with labels for its group and subgroup."""
    frame, row = _classify_arrays([morphology], [topography], [behaviour], edition)
    compiled = _compiled(edition)
    rec = frame.iloc[0]
    norm = icdo3.normalise_morphology(pd.Series([morphology])).iloc[0]
    beh = icdo3.parse_behaviour(behaviour)
    if beh is None and not pd.isna(norm["behaviour"]):
        beh = int(norm["behaviour"])
    r = int(row[0])

    def opt(value: Any) -> Any:
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    return IcccClassification(
        edition=edition,
        morphology=opt(norm["morphology"]),
        topography=opt(icdo3.normalise_topography(pd.Series([topography])).iloc[0]),
        behaviour=beh,
        iccc_group=opt(rec["iccc_group"]),
        iccc_subgroup=opt(rec["iccc_subgroup"]),
        iccc_extended=opt(rec["iccc_extended"]),
        iccc_recode=opt(rec["iccc_recode"]),
        iccc_label=opt(rec["iccc_label"]),
        subgroup_label=compiled.subgroup_label[r] if r >= 0 else None,
        group_label=compiled.group_label[r] if r >= 0 else None,
        error=opt(rec["error"]),
    )

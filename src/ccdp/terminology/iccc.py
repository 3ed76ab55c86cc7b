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
from ccdp.terminology.datafiles import data_path

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
    with data_path(name).open(encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype=str, keep_default_na=False)


@cache
def iccc_codes(edition: str = "2017") -> pd.DataFrame:
    """The categories of one edition: extended code, recode, group, subgroup, division, labels."""
    check_edition(edition)
    codes = _data_csv("iccc_codes.csv")
    return codes[codes["edition"] == edition].reset_index(drop=True)


@cache
def iccc_rules(edition: str = "2017") -> pd.DataFrame:
    """The rule rows of one edition, in the order they are tried."""
    check_edition(edition)
    rules = _data_csv("iccc_rules.csv")
    rules = rules[rules["edition"] == edition].copy()
    rules["rule"] = rules["rule"].astype(int)
    return rules.sort_values("rule").reset_index(drop=True)


def check_edition(edition: str) -> None:
    """Refuse an unknown ICCC edition before any file is read (also the file classifier's)."""
    if edition not in EDITIONS:
        raise TerminologyError(f"ICCC edition '{edition}': not one of {', '.join(EDITIONS)}")


def _site_int(code: str) -> int:
    """`C42.1` -> 421."""
    return int(code[1:3]) * 10 + int(code[4])


def _site_int_or_minus_one(value: Any) -> int:
    code = icdo3.parse_topography(value)
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


def _join_errors(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Row-wise '; '-join of per-field messages; each part is (has_error mask, messages)."""
    err = np.full(n, None, dtype=object)
    seen = np.zeros(n, dtype=bool)
    for has, messages in parts:
        if not has.any():
            continue
        both = has & seen
        err[both] = err[both] + "; " + messages[both]
        only = has & ~seen
        err[only] = messages[only]
        seen |= has
    return err


def _column(values: pd.Series, fn: Any) -> tuple[np.ndarray, list[Any]]:
    """Factorise one input column and apply `fn` to each distinct value (last slot: missing)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, [fn(u) for u in uniques] + [fn(None)]


def _morph_info(value: Any) -> tuple[int, int, str | None]:
    code, beh = icdo3.parse_morphology(value)
    return (
        int(code) - 8000 if code is not None else -1,
        beh if beh is not None else -1,
        icdo3.morphology_problem(value),
    )


def _topo_info(value: Any) -> tuple[int, str | None]:
    return (_site_int_or_minus_one(value), icdo3.topography_problem(value))


def _beh_info(value: Any) -> tuple[int, str | None]:
    beh = icdo3.parse_behaviour(value)
    return (beh if beh is not None else -1, icdo3.behaviour_problem(value))


def _inputs(morphology: Any, topography: Any, behaviour: Any) -> tuple[pd.Series, ...]:
    series = [icdo3.as_series(v) for v in (morphology, topography, behaviour)]
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
    check_edition(edition)
    compiled = _compiled(edition)
    m_raw, t_raw, b_raw = _inputs(morphology, topography, behaviour)
    n = len(m_raw)

    m_codes, m_info = _column(m_raw, _morph_info)
    t_codes, t_info = _column(t_raw, _topo_info)
    b_codes, b_info = _column(b_raw, _beh_info)
    m_idx = np.array([i[0] for i in m_info], dtype=np.int64)[m_codes]
    beh_in_morph = np.array([i[1] for i in m_info], dtype=np.int64)[m_codes]
    s_int = np.array([i[0] for i in t_info], dtype=np.int64)[t_codes]
    beh_given = np.array([i[0] for i in b_info], dtype=np.int64)[b_codes]

    def field_errors(codes: np.ndarray, info: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        messages = np.array([i[-1] for i in info], dtype=object)
        has = np.array([i[-1] is not None for i in info], dtype=bool)[codes]
        return has, messages[codes]

    m_err = field_errors(m_codes, m_info)
    t_err = field_errors(t_codes, t_info)
    b_err = field_errors(b_codes, b_info)
    beh = np.where(beh_given >= 0, beh_given, beh_in_morph)
    missing = (beh < 0) & ~b_err[0]
    conflict = (beh_given >= 0) & (beh_in_morph >= 0) & (beh_given != beh_in_morph)
    x_msg = np.full(n, None, dtype=object)
    x_msg[missing] = "behaviour: missing (required)"
    if conflict.any():
        idx = np.flatnonzero(conflict)
        x_msg[idx] = [
            f"behaviour {beh_given[i]} contradicts morphology '{m_raw.iloc[i]}'" for i in idx
        ]
    parts = [m_err, t_err, b_err, (missing | conflict, x_msg)]
    bad = m_err[0] | t_err[0] | b_err[0] | missing | conflict
    error = _join_errors(parts, n)
    ok = ~bad

    m_idx[bad] = 0
    s_int[bad] = 0
    beh[bad] = 0
    row = compiled.table[m_idx, compiled.site_class[s_int], beh].astype(np.int64)
    row[bad] = -1

    out: dict[str, Any] = {}
    for name, col in compiled.outputs.items():
        values = col[np.where(ok, row, 0)]
        if bad.any():
            values[bad] = None
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

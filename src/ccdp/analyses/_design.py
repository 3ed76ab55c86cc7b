"""Design matrices for federated regression: the coordinator learns the pooled covariate levels
and means in a first round, then every node builds identical columns.

Categorical covariates are dummy-coded against the first level in sort order (or `reference`),
terms named `variable[level]`. Numeric covariates are centred on the pooled mean for numerical
stability of exp(xβ); coefficients are unchanged by centring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from ccdp.analyses.node_data import NodeData
from ccdp.cohort.view import declared_levels, view_variables
from ccdp.wire.errors import AnalysisError
from ccdp.wire.summary import AggregatePart, CountsPart, Part, PartSpec, Summary

LEVELS = "levels:"
MOMENTS = "moments"


def is_numeric(series: pd.Series) -> bool:
    """Numbers and booleans enter models as they are; anything else is categorical."""
    return bool(is_numeric_dtype(series) or is_bool_dtype(series))


def is_categorical(frame: pd.DataFrame, name: str) -> bool:
    """A term whose levels each describe a set of records: categorical by the view's disclosure
    class (0/1 indicators too), or any column that is not numeric."""
    var = view_variables().get(name)
    return (var is not None and var.var_class == "categorical") or not is_numeric(frame[name])


def _sorted_levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(values, return_inverse=True, return_counts=True)` of a text column, by
    hashing the rows and sorting only the distinct values (a few levels, not every row)."""
    codes, uniques = pd.factorize(values)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    row = rank[codes]
    return np.asarray(uniques)[order], row, np.bincount(row, minlength=len(order))


def level_counts(frame: pd.DataFrame, names: list[str]) -> dict[str, list[int]]:
    """Records at each level of every categorical term among `names` (node-side only: the gate
    refuses a model in which a level holds fewer than min_cell records)."""
    return {n: _level_sizes(frame[n]) for n in names if is_categorical(frame, n)}


def _level_sizes(column: pd.Series) -> list[int]:
    """Records per level, largest first, levels told apart by their text (`astype(str)`). A
    numeric column is counted on its values' bits (NaN made one value): distinct ints, bools
    and floats (-0.0 and 0.0 included) have distinct texts, so the counts are the same,
    without formatting every value as text."""
    values = column.to_numpy()
    if values.dtype.kind in "biuf":
        if values.dtype.kind == "f":
            values = np.where(np.isnan(values), np.nan, values)
            values = values.view(f"u{values.dtype.itemsize}")
        counts = np.unique(values, return_counts=True)[1]
        return [int(k) for k in np.sort(counts)[::-1]]
    return [int(k) for k in column.astype(str).value_counts().to_numpy()]


def describe(
    frame: pd.DataFrame,
    covariates: list[str],
    extra: dict[str, float],
    data: NodeData,
    outcome: str | None = None,
) -> dict[str, Part]:
    """The node's covariate levels (as counts) and sums of numeric covariates (and `extra`).

    The frame's rows (records of `data`) become the parts' node-side records, which the
    gate needs to judge them: the level cells count their rows, the sums count every row. The
    per-level counts of the categorical covariates (and of a binary `outcome`) ride along,
    node-side, for the gate's level rule."""
    parts: dict[str, Part] = {}
    sums: dict[str, float] = dict(extra)
    for c in covariates:
        if is_numeric(frame[c]):
            sums[c] = float(frame[c].astype(float).sum())
            continue
        levels, row, counts = _sorted_levels(frame[c].astype(str).to_numpy())
        cells = [{c: str(level), "n": int(k)} for level, k in zip(levels, counts, strict=True)]
        records = data.records(frame.index, row)
        parts[LEVELS + c] = CountsPart(dims=[c], counts=["n"], cells=cells, records=records)
    # Parameters: the covariate means the coordinator learns (the outcome totals are counts).
    n_params = len(sums) - len(extra)
    parts[MOMENTS] = AggregatePart(
        n=len(frame),
        n_params=n_params,
        values={"sums": sums},
        records=data.records(frame.index),
        levels=level_counts(frame, [*covariates, *([outcome] if outcome else [])]),
    )
    return parts


def describe_spec(covariates: list[str]) -> dict[str, PartSpec]:
    """What `describe` sends: the moments, and the levels of each covariate that is categorical
    at the node (a numeric one has none, so each levels part may be absent)."""
    levels = {
        LEVELS + c: PartSpec("counts", dims=(c,), counts=("n",), optional=True) for c in covariates
    }
    return {**levels, MOMENTS: PartSpec("aggregate")}


def pooled_sums(summaries: dict[str, Summary]) -> tuple[int, dict[str, float]]:
    """Total rows and summed `moments` over the nodes."""
    n = 0
    sums: dict[str, float] = {}
    for s in summaries.values():
        part = s.parts[MOMENTS]
        assert isinstance(part, AggregatePart)
        n += part.n
        for k, v in part.values["sums"].items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return n, sums


def make_design(
    summaries: dict[str, Summary],
    covariates: list[str],
    reference: dict[str, Any],
    center: bool,
) -> dict[str, Any]:
    """Columns every node will build: pooled levels (dummy-coded) and pooled means."""
    if not summaries:
        raise AnalysisError("no node answered the first round")
    n, sums = pooled_sums(summaries)
    terms: list[str] = []
    columns: list[dict[str, Any]] = []
    all_levels: dict[str, list[str]] = {}
    for c in covariates:
        level_parts = [s.counts(LEVELS + c) for s in summaries.values() if LEVELS + c in s.parts]
        if level_parts and c in sums:
            raise AnalysisError(f"covariate {c} is numeric at some nodes and categorical at others")
        if not level_parts:
            columns.append({"var": c, "center": sums[c] / n if center and n else 0.0})
            terms.append(c)
            continue
        levels = sorted({str(cell[c]) for p in level_parts for cell in p.cells})
        ref = str(reference.get(c, levels[0]))
        if ref not in levels:
            # the pooled levels are released counts' labels, but only declared ones are public
            known = f" (levels: {', '.join(levels)})" if _all_declared(c, levels) else ""
            raise AnalysisError(f"reference: {ref!r} is not a level of {c}{known}")
        all_levels[c] = levels
        for level in levels:
            if level != ref:
                columns.append({"var": c, "level": level})
                terms.append(f"{c}[{level}]")
    unknown = set(reference) - set(covariates)
    if unknown:
        raise AnalysisError(f"reference given for {sorted(unknown)}, which are not covariates")
    return {"terms": terms, "columns": columns, "levels": all_levels}


def _all_declared(name: str, levels: list[str]) -> bool:
    declared = declared_levels(name)
    return declared is not None and set(levels) <= declared


def design_matrix(frame: pd.DataFrame, design: dict[str, Any], node: str) -> np.ndarray:
    """The node's model matrix for the coordinator's design (no intercept)."""
    cols: list[np.ndarray] = []
    # per categorical variable: its rows' level codes and the code of each level, from one
    # pass over its text (a dummy column is then a comparison of integers)
    coded: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
    for spec in design["columns"]:
        var = spec["var"]
        series = frame[var]
        if "level" in spec:
            if var not in coded:
                codes, uniques = pd.factorize(series.astype(str).to_numpy())
                extra = {str(u) for u in uniques} - set(design["levels"][var])
                if extra or is_numeric(series):
                    raise AnalysisError(
                        f"node {node}: {var} has values that are not among its pooled levels"
                    )
                coded[var] = (codes, {str(u): i for i, u in enumerate(uniques)})
            codes, index = coded[var]
            cols.append((codes == index.get(str(spec["level"]), -2)).astype(float))
        else:
            if not is_numeric(series):
                raise AnalysisError(f"node {node}: covariate {var} is not numeric here")
            cols.append(series.to_numpy(dtype=float) - float(spec["center"]))
    if not cols:
        return np.zeros((len(frame), 0))
    return np.column_stack(cols)

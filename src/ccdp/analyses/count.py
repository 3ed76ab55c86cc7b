"""`count` and `crosstab`: numbers of tumours, patients or biobank specimens by up to three
view variables.

Each node sends its cells and its total as CountsParts; disclosure control at the node suppresses
small cells (and complements, so margins give nothing away), or under the node's policy `counts:
perturbed` publishes every count with cell-key noise instead. The coordinator adds the nodes'
cells; a pooled cell to which any node contributed a suppressed value is itself reported as
suppressed, and the result's `method` says whether and by how much the counts were perturbed.
With `unit: specimens` a node counts its available specimens of the cohort's tumours (one view row
per specimen, with `specimen_type`), and a cell is judged by the children the samples come from
(docs/specimens.md): specimen discovery, before a researcher asks for samples.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Continue, Done, plural
from ccdp.analyses.cells import counts_part, summed_parts
from ccdp.analyses.node_data import NodeData
from ccdp.cohort.variables import check_variables
from ccdp.cohort.view import Rows, specimen_only
from ccdp.wire.levels import sort_key
from ccdp.wire.summary import CountsPart, PartSpec, Summary


class CountParams(AnalysisParams):
    """Group by up to three view variables; count tumours (view rows), distinct patients, or
    available biobank specimens of the cohort's tumours (`specimens`, which may also group by
    `specimen_type`)."""

    by: list[str] = Field(default_factory=list, max_length=3)
    unit: Literal["tumours", "patients", "specimens"] = "tumours"

    @field_validator("by")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return check_variables(v)

    @model_validator(mode="after")
    def _specimen_variables(self) -> CountParams:
        used = specimen_only(self.by)
        if used and self.unit != "specimens":
            raise ValueError(
                f"by: {', '.join(used)} is a specimen variable: count with unit: specimens"
            )
        return self


class CrosstabParams(CountParams):
    """A cross-tabulation: one to three variables (rows, columns, layers)."""

    by: list[str] = Field(min_length=1, max_length=3)


class CountResult(AnalysisResult):
    """Pooled cells: grouping values, `n` (None when suppressed at some node) and `suppressed`.

    `unlisted_cells` counts cells a node withheld without their labels (labels outside a
    declared level set): the pooled cells they belong to cannot be told, so while it is above
    zero every listed `n` is a lower bound.

    `method` says how the counts were released: `{"counts": "exact"}`, or where any node
    perturbed its counts (cell-key method, docs/disclosure.md) `{"counts": "perturbed",
    "max_noise": D, "pooled_max_noise": P, "perturbed_nodes": k}`: each node's value is within
    D of its true count and a pooled value, a sum of node values, within P (the sum of the
    nodes' D)."""

    by: list[str]
    unit: str
    cells: list[dict[str, Any]]
    total: int | None
    suppressed_cells: int
    unlisted_cells: int = 0
    method: dict[str, Any] = Field(default_factory=lambda: {"counts": "exact"})

    def __rich__(self) -> Any:
        from ccdp.analyses.tables import frame_table
        from ccdp.cohort.labels import variable_label

        total = "suppressed" if self.total is None else self.total
        by = ", ".join(variable_label(b) for b in self.by) or "(all)"
        title = f"{self.unit} by {by}: total {total}"
        if self.suppressed_cells:
            title += f", {self.suppressed_cells} cell(s) suppressed at a node"
        if self.unlisted_cells:
            title += (
                f"\n{self.unlisted_cells} of them withheld without their labels: "
                "the counts shown are lower bounds"
            )
        if self.method_text():
            title += "\n" + self.method_text()
        return frame_table(self.to_frame(), title)

    def method_text(self) -> str:
        """The line a table of perturbed counts needs beside it (CLI title, report caption);
        empty for exact counts."""
        if self.method.get("counts") != "perturbed":
            return ""
        return (
            f"Perturbed counts (cell-key method): each node's count within "
            f"±{self.method.get('max_noise')} of the truth, pooled counts within "
            f"±{self.method.get('pooled_max_noise')}; margins and totals perturbed on their own."
        )

    def brief(self) -> str:
        total = "suppressed" if self.total is None else self.total
        return (
            f"{self.unit} by {', '.join(self.by)}, {plural(len(self.cells), 'cell')}, total {total}"
        )

    def _summary_frame(self) -> pd.DataFrame:
        cols = [*self.by, "n", "suppressed"]
        frame = pd.DataFrame(self.cells, columns=cols)
        frame["n"] = frame["n"].astype("Int64")
        return frame


class CrosstabResult(CountResult):
    """A cross-tab; `to_frame` pivots the last variable into columns, with margins (row and
    column totals, released by the nodes as their own protected tables) for two variables."""

    margins: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)

    def _summary_frame(self) -> pd.DataFrame:
        long = super()._summary_frame()
        if len(self.by) == 1:
            return long
        rows, cols = self.by[:-1], self.by[-1]
        series = long.set_index([*rows, cols])["n"]
        wide = series.unstack(cols, fill_value=0)  # absent cells are zeros, suppressed stay NA
        # unstack sorts labels as text (IX before V): back to the classification's order
        col_order = sorted(wide.columns, key=lambda v: sort_key((v,)))
        row_order = sorted(wide.index, key=lambda v: sort_key(v if isinstance(v, tuple) else (v,)))
        wide = wide.loc[row_order, col_order]
        if len(self.by) == 2 and self.margins:
            row_var = rows[0]
            row_tot = {m[row_var]: m["n"] for m in self.margins.get(row_var, [])}
            col_tot = {m[cols]: m["n"] for m in self.margins.get(cols, [])}
            wide["Total"] = pd.array([row_tot.get(k) for k in wide.index], dtype="Int64")
            total = pd.array(
                [*(col_tot.get(c) for c in wide.columns[:-1]), self.total], dtype="Int64"
            )
            wide.loc["Total"] = total
        return wide.astype("Int64")


def _method(summaries: dict[str, Summary]) -> dict[str, Any]:
    """How the nodes released their counts: exact, or perturbed with the bound on each node's
    and on a pooled value's noise (pooled values are sums of node values)."""
    noise = [
        max((p.noise for p in s.parts.values() if isinstance(p, CountsPart)), default=0)
        for s in summaries.values()
    ]
    if not any(noise):
        return {"counts": "exact"}
    return {
        "counts": "perturbed",
        "max_noise": max(noise),
        "pooled_max_noise": sum(noise),
        "perturbed_nodes": sum(1 for d in noise if d),
    }


def _pool(parts: list[CountsPart], dims: list[str]) -> tuple[list[dict[str, Any]], int]:
    """Add cells over nodes; a cell any node suppressed stays suppressed (n None)."""
    pooled: dict[tuple, int | None] = {}
    for part in parts:
        for cell in part.cells:
            key = tuple(cell.get(d) for d in dims)
            prev = pooled.get(key, 0)
            n = cell.get("n")
            pooled[key] = None if prev is None or n is None else prev + n
    cells = [
        {**dict(zip(dims, key, strict=True)), "n": n, "suppressed": n is None}
        for key, n in sorted(pooled.items(), key=lambda kv: sort_key(kv[0]))
    ]
    return cells, sum(c["suppressed"] for c in cells)


class Count(Analysis[CountParams]):
    """Counts of tumours, patients or specimens by up to three variables."""

    name: ClassVar[str] = "count"
    params_model: ClassVar[type[AnalysisParams]] = CountParams
    result_model: ClassVar[type[CountResult]] = CountResult

    def summary_parts(self, params: CountParams, request: dict) -> dict[str, PartSpec]:
        return {
            "cells": PartSpec("counts", dims=tuple(params.by), counts=("n",)),
            "total": PartSpec("counts", dims=(), counts=("n",)),
        }

    def columns(self, params: CountParams) -> list[str]:
        return list(params.by)

    def view_rows(self, params: CountParams) -> Rows:
        return "specimens" if params.unit == "specimens" else "tumours"

    def local(
        self,
        data: NodeData,
        params: CountParams,
        request: dict,
        cache: dict,
    ) -> Summary:
        names = self.part_groupings(params)
        groupings = list(names.values())
        parts = summed_parts(data, groupings, params.unit)  # perturbed: one aggregate at the node
        if parts is None:
            frame = data.view(self.columns(params))
            parts = [counts_part(data, frame, by, params.unit) for by in groupings]
        return Summary(parts=dict(zip(names, parts, strict=True)))

    def part_groupings(self, params: CountParams) -> dict[str, list[str]]:
        """The parts a node sends and the variables each groups by."""
        return {"cells": list(params.by), "total": []}

    def start(self, params: AnalysisParams) -> Continue:
        return Continue(request={})

    def combine(
        self,
        params: CountParams,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Done:
        parts = [s.parts["cells"] for s in summaries.values() if "cells" in s.parts]
        cells, n_suppressed = _pool(parts, list(params.by))  # type: ignore[arg-type]
        unlisted = sum(p.withheld for p in parts if isinstance(p, CountsPart))
        totals = [s.parts["total"] for s in summaries.values() if "total" in s.parts]
        tot_cells, _ = _pool(totals, [])  # type: ignore[arg-type]
        total = tot_cells[0]["n"] if tot_cells else 0
        return Done(
            self.result_model(
                analysis=self.name,
                by=list(params.by),
                unit=params.unit,
                cells=cells,
                total=total,
                suppressed_cells=n_suppressed + unlisted,
                unlisted_cells=unlisted,
                method=_method(summaries),
            )
        )


class Crosstab(Count):
    """Cross-tabulation of tumours, patients or specimens by one to three variables, with
    margins."""

    name: ClassVar[str] = "crosstab"
    params_model: ClassVar[type[AnalysisParams]] = CrosstabParams
    result_model: ClassVar[type[CountResult]] = CrosstabResult

    def summary_parts(self, params: CountParams, request: dict) -> dict[str, PartSpec]:
        parts = super().summary_parts(params, request)
        for var in params.by if len(params.by) > 1 else []:
            parts[f"margin:{var}"] = PartSpec("counts", dims=(var,), counts=("n",))
        return parts

    def part_groupings(self, params: CountParams) -> dict[str, list[str]]:
        margins = {f"margin:{var}": [var] for var in params.by if len(params.by) > 1}
        return {**super().part_groupings(params), **margins}

    def combine(
        self,
        params: CountParams,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Done:
        done = super().combine(params, state, summaries)
        margins = {}
        for var in params.by if len(params.by) > 1 else []:
            parts = [
                s.parts[f"margin:{var}"] for s in summaries.values() if f"margin:{var}" in s.parts
            ]
            margins[var] = [
                {k: v for k, v in c.items() if k != "suppressed"}
                for c in _pool(parts, [var])[0]  # type: ignore[arg-type]
            ]
        done.result.margins = margins  # type: ignore[attr-defined]
        return done

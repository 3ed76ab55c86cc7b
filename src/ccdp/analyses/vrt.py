"""`vrt_report`: the very-rare-tumour registry report (EXPeRT/PARTNER).

Per VRT entity (`vrt_entity` of the analysis view): cases per node, pooled crude incidence per
million person-years with its exact Poisson interval for ages 0-14 and 0-19, whether the pooled
rate is below EXPeRT's 2 per million per year, and overall survival where enough cases allow.

Two rounds. First each node sends its cases by entity for 0-14 and for 0-19 (one linked table for
disclosure control, so a 15-19 count cannot be had by subtraction) and its person-years
(`incidence`'s denominators and helpers). Then, for the entities whose pooled 0-19 count reaches
`min_os_cases`, the nodes send KM event-time tables (`km`'s), so pooled OS equals a pooled KM; a
group the gate withholds at a node (too small, or too close to what the first round released)
leaves that node out of the curve, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from ccdp.analyses.base import (
    Analysis,
    AnalysisParams,
    AnalysisResult,
    Continue,
    Done,
)
from ccdp.analyses.cells import counts_part
from ccdp.analyses.incidence import (
    CRUDE_CI_METHOD,
    PER,
    UNFOLLOWED_BY_DENOMINATORS,
    YEARS,
    in_denominators,
    period_covered,
    poisson_ci,
    pool,
    population_cells,
    years_part,
)
from ccdp.analyses.km import KMGroup, event_table_part, event_table_spec, km_group, with_ci
from ccdp.analyses.node_data import NodeData
from ccdp.cohort.derived.vrt import entity_ids, entity_labels
from ccdp.cohort.spec import CohortError
from ccdp.disclosure.context import DisclosureContext
from ccdp.terminology.populations import AGE_RANGES
from ccdp.wire.records import Records, Unit
from ccdp.wire.summary import CountsPart, PartSpec, Summary

AGES = ("0-14", "0-19")
EXPERT_THRESHOLD = 2.0  # per million per year: EXPeRT's VRT definition (Ferrari et al. 2021)
OS_YEARS = 5
COUNTS_STEP, OS_STEP = "counts", "os"


def _part(ages: str) -> str:
    return f"cases_{ages.replace('-', '_')}"


class VrtParams(AnalysisParams):
    """Entities to report (default all), the pooled cases OS needs, the interval level."""

    entities: list[str] | None = None
    min_os_cases: int = Field(10, ge=2)
    level: float = Field(0.95, gt=0, lt=1)

    @field_validator("entities")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = sorted(set(v) - set(entity_ids()))
        if bad:
            raise ValueError(f"unknown VRT entities {bad}; known: {', '.join(entity_ids())}")
        return list(dict.fromkeys(v))

    @property
    def wanted(self) -> list[str]:
        return self.entities if self.entities is not None else entity_ids()


class VrtRate(BaseModel):
    """One entity's pooled rate for one age range."""

    ages: str
    cases: int | None
    person_years: float
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    below_2_per_million: bool | None
    withheld_nodes: list[str]


class VrtEntity(BaseModel):
    entity: str
    label: str
    node_cases: dict[str, int | None]  # ages 0-19; None: suppressed at that node
    rates: list[VrtRate]
    os: KMGroup | None = None
    os_nodes: list[str] = Field(default_factory=list)
    os_5y: float | None = None
    os_5y_ci: list[float | None] | None = None


class VrtResult(AnalysisResult):
    """The VRT registry report: one entry per entity."""

    analysis: str = "vrt_report"
    level: float
    min_os_cases: int
    per: float = PER
    period: list[int] | None = None
    entities: list[VrtEntity]

    def method_text(self) -> str:
        years = f"years of diagnosis {self.period[0]}–{self.period[1]}; " if self.period else ""
        return (
            f"{years}crude rates per million person-years, {self.level:.0%} CI {CRUDE_CI_METHOD}; "
            f"below 2: pooled rate under EXPeRT's 2 per million per year; OS at {OS_YEARS} years "
            f"(Kaplan–Meier, 95% CI log-log) where at least {self.min_os_cases} cases (0-19)"
        )

    text_width: ClassVar[int] = 160

    def brief(self) -> str:
        n = len(self.entities)
        return "1 entity" if n == 1 else f"{n} entities"

    def _summary_frame(self) -> pd.DataFrame:
        rows = []
        for e in self.entities:
            row: dict[str, Any] = {"entity": e.label}
            for r in e.rates:
                row[f"cases {r.ages}"] = r.cases
                row[f"rate {r.ages} ({self.level:.0%} CI)"] = (
                    f"{r.rate:.2f} ({r.ci_low:.2f}–{r.ci_high:.2f})"
                    if r.rate is not None and r.ci_low is not None and r.ci_high is not None
                    else "—"
                )
                row[f"below 2 ({r.ages})"] = _yes_no(r.below_2_per_million)
            row["withheld at"] = ", ".join(sorted({n for r in e.rates for n in r.withheld_nodes}))
            ci = e.os_5y_ci or [None, None]
            row[f"OS {OS_YEARS} y (95% CI)"] = with_ci(e.os_5y, ci[0], ci[1])
            rows.append(row)
        frame = pd.DataFrame(rows)
        cases = [c for c in frame.columns if str(c).startswith("cases ")]
        return frame.astype(dict.fromkeys(cases, "Int64"))  # whole numbers, not 3.0

    def __rich__(self) -> Any:
        from rich.table import Table

        frame = self.to_frame()
        table = Table(title="Very rare tumours (EXPeRT/PARTNER)", caption=self.method_text())
        for col in frame.columns:
            table.add_column(str(col), justify="left" if col == "entity" else "right")
        for rec in frame.astype(object).where(frame.notna(), "—").to_dict("records"):
            table.add_row(*(str(v) for v in rec.values()))
        return table


def _yes_no(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "no")


@dataclass
class _Rows:
    """The node's data restricted to some view rows: what `event_table_part` reads."""

    base: NodeData
    index: pd.Index
    node: str = ""

    def __post_init__(self) -> None:
        self.node = self.base.node

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.base.view(columns).loc[self.index]

    def population(self) -> pd.DataFrame:
        return self.base.population()

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        return self.base.record_keys(index, unit)

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        return self.base.records(index, row, unit)

    @property
    def disclosure(self) -> DisclosureContext:
        return self.base.disclosure


class VrtReport(Analysis[VrtParams]):
    """Very-rare-tumour registry: cases, pooled incidence (0-14, 0-19) and OS per entity."""

    name: ClassVar[str] = "vrt_report"
    params_model: ClassVar[type[AnalysisParams]] = VrtParams
    result_model: ClassVar[type[AnalysisResult]] = VrtResult

    def columns(self, params: VrtParams) -> list[str]:
        return ["vrt_entity", "age_group", "country", "diagnosis_year", "os_time", "os_event"]

    def check_cohort(self, variables: set[str]) -> None:
        """As incidence: the denominators cannot follow a finer age or date cut."""
        finer = sorted(variables & set(UNFOLLOWED_BY_DENOMINATORS))
        if finer:
            raise CohortError(
                f"vrt_report: the cohort restricts {', '.join(finer)}, which the population "
                "table cannot follow; restrict age_group, diagnosis_year or diagnosis_period"
            )

    def start(self, params: VrtParams) -> Continue:
        return Continue(request={"step": COUNTS_STEP})

    def summary_parts(self, params: VrtParams, request: dict) -> dict[str, PartSpec]:
        if request.get("step") == OS_STEP:
            return event_table_spec(["vrt_entity"])
        return {
            **{_part(a): PartSpec("counts", dims=("vrt_entity",), counts=("cases",)) for a in AGES},
            "population": PartSpec("counts", dims=("age_group",), counts=()),
            YEARS: PartSpec("counts", dims=("diagnosis_year",), counts=()),
        }

    def _cases(self, data: NodeData, params: VrtParams) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The node's VRT cases of the wanted entities aged 0-19 within its denominators."""
        pop = data.population()
        pop = pop[pop["age_group"].astype(str).isin(AGE_RANGES["0-19"])]
        view = data.view(self.columns(params))
        keep = (
            view["vrt_entity"].isin(params.wanted)
            & view["age_group"].isin(AGE_RANGES["0-19"])
            & in_denominators(view, pop)
        )
        return view[keep], pop

    def local(
        self, data: NodeData, params: VrtParams, request: dict[str, Any], cache: dict
    ) -> Summary:
        cases, pop = self._cases(data, params)
        if request.get("step") == OS_STEP:
            wanted = [e for e in request.get("entities", []) if e in params.wanted]
            rows = cases[cases["vrt_entity"].isin(wanted)]
            part = event_table_part(_Rows(data, rows.index), "os", ["vrt_entity"], "day")
            return Summary(parts={"events": part})
        parts: dict[str, Any] = {
            _part(a): counts_part(
                data, cases[cases["age_group"].isin(AGE_RANGES[a])], ["vrt_entity"], count="cases"
            )
            for a in AGES
        }
        parts["population"] = CountsPart(
            dims=["age_group"], counts=[], cells=population_cells(pop, [], AGE_RANGES["0-19"])
        )
        parts[YEARS] = years_part(pop)
        return Summary(parts=parts)

    def combine(self, params: VrtParams, state: Any, summaries: dict[str, Summary]) -> Any:
        if state is None:
            entities = self._entities(params, summaries)
            period = period_covered(summaries)
            enough = [
                e.entity
                for e in entities
                if (c := e.rates[-1].cases) is not None and c >= params.min_os_cases
            ]
            done = {"entities": entities, "period": period}
            if not enough:
                return Done(self._result(params, done))
            return Continue(request={"step": OS_STEP, "entities": enough}, state=done)
        self._add_os(state["entities"], summaries)
        return Done(self._result(params, state))

    def _result(self, params: VrtParams, state: dict[str, Any]) -> VrtResult:
        return VrtResult(
            level=params.level,
            min_os_cases=params.min_os_cases,
            period=state["period"],
            entities=state["entities"],
        )

    def _entities(self, params: VrtParams, summaries: dict[str, Summary]) -> list[VrtEntity]:
        pyears = pool(summaries, "population", ["age_group"], "person_years")
        labels = entity_labels()
        out = []
        for entity in params.wanted:
            rates = []
            node_cases: dict[str, int | None] = {}
            for ages in AGES:
                per_node = {n: _node_count(s, _part(ages), entity) for n, s in summaries.items()}
                if ages == "0-19":
                    node_cases = per_node
                py = float(sum(pyears.get((a,), 0.0) or 0.0 for a in AGE_RANGES[ages]))
                rates.append(_rate(ages, per_node, py, params.level))
            out.append(
                VrtEntity(entity=entity, label=labels[entity], node_cases=node_cases, rates=rates)
            )
        return out

    def _add_os(self, entities: list[VrtEntity], summaries: dict[str, Summary]) -> None:
        tables = {n: s.event_times("events") for n, s in summaries.items()}
        for e in entities:
            parts = [
                (n, t.columns) for n, t in tables.items() if len(t) and e.entity in t.group_sizes
            ]
            if not parts:
                continue
            cols = ["group", "time", "events", "censored"]
            frame = pd.DataFrame({c: np.concatenate([p[c] for _, p in parts]) for c in cols})
            frame = frame[frame["group"] == e.entity]
            table = frame.groupby("time", sort=True, as_index=False)[["events", "censored"]].sum()
            e.os = km_group(e.entity, table)
            e.os_nodes = sorted(n for n, _ in parts)
            mark = next((m for m in e.os.survival_at if m.years == OS_YEARS), None)
            if mark is not None:
                e.os_5y, e.os_5y_ci = mark.survival, [mark.ci_low, mark.ci_high]


def _node_count(summary: Summary, part: str, entity: str) -> int | None:
    """A node's cases of an entity: 0 when it lists none, None when it suppressed the cell."""
    counts = summary.counts(part)
    cell = next((c for c in counts.cells if c.get("vrt_entity") == entity), None)
    if cell is None:
        return None if counts.withheld else 0
    value = cell.get("cases")
    return None if value is None else int(value)


def _rate(ages: str, per_node: dict[str, int | None], py: float, level: float) -> VrtRate:
    """The pooled crude rate over the nodes (none at all when a node withheld its count: a
    partial pool would understate the rate)."""
    withheld = sorted(n for n, c in per_node.items() if c is None)
    cases = None if withheld else int(sum(c for c in per_node.values() if c is not None))
    if cases is None or py <= 0:
        return VrtRate(
            ages=ages,
            cases=cases,
            person_years=py,
            rate=None,
            ci_low=None,
            ci_high=None,
            below_2_per_million=None,
            withheld_nodes=withheld,
        )
    lo, hi = poisson_ci(cases, level)
    rate = cases / py * PER
    return VrtRate(
        ages=ages,
        cases=cases,
        person_years=py,
        rate=rate,
        ci_low=lo / py * PER,
        ci_high=hi / py * PER,
        below_2_per_million=rate < EXPERT_THRESHOLD,
        withheld_nodes=withheld,
    )

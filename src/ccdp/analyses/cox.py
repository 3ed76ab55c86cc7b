"""Cox proportional hazards, federated and exact.

Round 0 learns the pooled covariate levels and means (see `_design`). Then each round evaluates
the partial likelihood at the coordinator's β, in one of two ways chosen by `strata`:

* strata containing `node` (the default `strata: node`, or e.g. `[node, sex]`): risk sets never
  cross nodes, so each node sends its log-likelihood, score and information (an AggregatePart)
  and the coordinator adds them and takes a Newton–Raphson step;
* strata without `node` (`none`, or e.g. `[sex]`): risk sets span nodes, so each node groups its
  times within each stratum (`ccdp.disclosure.event_times`: intervals (start, end] of at least
  min_cell subjects, each subject counted at its interval's end; exact where an interval holds
  one time) and sends, per stratum and interval end, its start and the sums of exp(xβ),
  x·exp(xβ), xxᵀ·exp(xβ) over all its rows and over its events (an EventTimesPart, as WebDISCO,
  Lu et al. JAMIA 2015); the coordinator adds them by time, forms the pooled risk sets and
  Efron's tie correction exactly.

Either way the estimate equals a pooled fit with the same strata (lifelines CoxPHFitter /
statsmodels PHReg). Where a node grouped its times, the events of an interval are tied at its
end and handled by Efron's or Breslow's approximation to the grouped-time (discrete) partial
likelihood (Kalbfleisch & Prentice, *The Statistical Analysis of Failure Time Data*, 2nd ed.
2002, §4.2.3; Efron, JASA 1977): the estimate then equals the pooled fit on the grouped times,
and the result's `method` says the times were grouped. Every form also sends a `model`
AggregatePart (n, number of parameters, records) so the gate's model checks apply to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator
from rich.markup import escape
from rich.table import Table
from scipy.sparse import csr_matrix
from scipy.special import chdtrc

from ccdp.analyses._coxcore import (
    Grouping,
    RiskGroups,
    group_rows,
    group_sum,
    moment_matrix,
    n_moments,
    partial_likelihood,
)
from ccdp.analyses._design import (
    describe,
    describe_spec,
    design_matrix,
    level_counts,
    make_design,
)
from ccdp.analyses._newton import NewtonFit, NewtonState, newton_step, wald_rows
from ccdp.analyses._render import num, pval
from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Continue, Done, plural
from ccdp.analyses.event_data import (
    ALL_GROUP,
    UNIT_DAYS,
    NotedResult,
    SurvivalOutcome,
    TimeUnit,
    complete_case_note,
    complete_cases,
    floats,
    group_labels,
    survival_arrays,
    survival_columns,
    times_method,
)
from ccdp.analyses.node_data import NodeData
from ccdp.analyses.tables import ratio_ci, term_order
from ccdp.cohort.labels import model_term_label, reference_label, term_label
from ccdp.cohort.variables import check_variables
from ccdp.wire.errors import AnalysisError, MalformedSummary
from ccdp.wire.records import Records
from ccdp.wire.summary import AggregatePart, EventTimesPart, PartSpec, Summary

NODE = "node"


class CoxParams(AnalysisParams):
    """Cox model of `outcome` on `covariates`; `strata` node | none | list of view variables
    (include `node` in the list to stratify within nodes); `reference` levels by covariate."""

    outcome: SurvivalOutcome = "os"
    covariates: list[str] = Field(min_length=1)
    strata: Literal["node", "none"] | list[str] = "node"
    ties: Literal["efron", "breslow"] = "efron"
    reference: dict[str, str | int | float] = Field(default_factory=dict)
    time_unit: TimeUnit = "day"
    max_iter: int = Field(default=50, ge=1, le=200)
    tol: float = Field(default=1e-9, gt=0)

    @field_validator("strata")
    @classmethod
    def _distinct(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            check_variables([s for s in v if s != NODE])
            if len(set(v)) != len(v):
                raise ValueError("strata: a variable is named twice")
        return v

    @field_validator("covariates")
    @classmethod
    def _modelled(cls, v: list[str]) -> list[str]:
        return check_variables(v, "covariate")

    def strata_vars(self) -> list[str]:
        """All stratification variables, `node` included when stratifying by node."""
        if self.strata == "node":
            return [NODE]
        if self.strata == "none":
            return []
        return list(self.strata)

    def within_node(self) -> bool:
        """True when risk sets never cross nodes (node among the strata)."""
        return NODE in self.strata_vars()

    def local_strata(self) -> list[str]:
        """Strata variables read from the node's view (node identity is implicit)."""
        return [v for v in self.strata_vars() if v != NODE]


class CoxTerm(BaseModel):
    term: str
    coef: float
    se: float
    hr: float
    ci_low: float
    ci_high: float
    p: float


class CoxResult(NotedResult):
    """Hazard ratios with Wald 95% CIs; loglik is the maximised log partial likelihood."""

    analysis: str = "cox"
    outcome: str
    ties: str
    strata: str | list[str]
    coefficients: list[CoxTerm]
    loglik: float
    loglik_null: float
    lr_chi2: float
    lr_df: int
    lr_p: float
    n: int
    events: int
    iterations: int
    converged: bool
    # the reference level of each categorical covariate (absent from results of older hubs)
    reference: dict[str, str] = Field(default_factory=dict)

    def reference_text(self) -> str:
        """'reference levels: Arm = A, Sex = female' (empty without categorical terms)."""
        return reference_label(self.reference)

    def __rich__(self) -> Table:
        strata = self.strata if isinstance(self.strata, str) else ", ".join(self.strata) or "none"
        t = Table(
            title=f"Cox proportional hazards: {term_label(self.outcome)} ({self.ties} ties, "
            f"strata: {strata})",
            caption=(escape(self.reference_text()) + "\n" if self.reference else "")
            + f"n = {self.n}, events = {self.events}, log partial likelihood = "
            f"{self.loglik:.4f}\nlikelihood-ratio test χ² = {self.lr_chi2:.3f} on {self.lr_df} df, "
            f"p = {pval(self.lr_p)}; iterations = {self.iterations}"
            + ("" if self.converged else "\nNOT CONVERGED")
            + (f"\n{escape(self.method_text())}" if self.method_text() else ""),
        )
        for col in ("term", "coef", "se", "HR (95% CI)", "p"):
            t.add_column(col, justify="left" if col == "term" else "right")
        terms = self.coefficients
        for c in (terms[i] for i in term_order([c.term for c in terms])):
            t.add_row(
                escape(model_term_label(c.term)),
                num(c.coef),
                num(c.se),
                ratio_ci(c.hr, c.ci_low, c.ci_high),
                pval(c.p),
            )
        return t

    def brief(self) -> str:
        terms = plural(len(self.coefficients), "term")
        return f"{terms}, {plural(self.n, 'subject')}, {plural(self.events, 'event')}"

    def _summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.model_dump() for c in self.coefficients]).set_index("term")

    def plot(self, **kw: Any) -> Any:
        """Forest plot of hazard ratios (a matplotlib Figure)."""
        from ccdp.analyses.plots import forest_plot

        return forest_plot(self, **kw)


@dataclass
class NodeCox:
    """A node's model arrays, sorted once and kept in the study cache across rounds."""

    grouping: Grouping
    x: np.ndarray  # sorted rows
    moments: np.ndarray  # sorted rows, see moment_matrix
    event_rows: np.ndarray  # positions of the events among the sorted rows (int32)
    d: np.ndarray  # per group
    sx: np.ndarray  # per group
    labels: np.ndarray  # stratum label by code
    start: np.ndarray  # per group: its interval's start (its time where exact)
    sizes: dict[str, int]
    n: int
    records: Records  # which (stratum, time) group each row is counted in
    levels: dict[str, list[int]]  # records per level of each categorical covariate

    def groups(self, beta: np.ndarray) -> RiskGroups:
        """Group sums of the moments weighted by exp(xβ), over all rows and over events.

        Each is a sparse (groups × rows) matrix holding the weights, times the moment matrix:
        one pass over the rows per sum, with no weighted copy of the moments (rows of a group
        are consecutive, so its matrix row is the slice `starts[g]:starts[g+1]`)."""
        w = np.exp(self.x @ beta)
        n, groups = len(w), len(self.d)
        bounds = np.append(self.grouping.starts, n).astype(np.int32)
        every = csr_matrix((w, np.arange(n, dtype=np.int32), bounds), shape=(groups, n))
        by_group = np.append(0, np.cumsum(self.d)).astype(np.int32)
        events = csr_matrix((w[self.event_rows], self.event_rows, by_group), shape=(groups, n))
        a = np.asarray(every @ self.moments)
        e = np.asarray(events @ self.moments)
        return RiskGroups(self.grouping.strata_starts, self.d, a, e, self.sx)


def prepare(data: NodeData, params: CoxParams, design: dict[str, Any]) -> NodeCox:
    """Read, code and sort the node's rows for this design.

    When risk sets cross nodes the node sends a row per (stratum, time), so its times are first
    grouped by the node's disclosure rules (`ccdp.disclosure.event_times`) within each stratum;
    the fit is then exact for the grouped times. Within-node strata send only the score and
    information, a sum over every row, and keep the exact times."""
    tcol, ecol = survival_columns(params.outcome)
    strata = params.local_strata()
    frame = complete_cases(data, [tcol, ecol, *params.covariates, *strata], data.node)
    time, event = survival_arrays(frame, params.outcome, params.time_unit, data.node)
    x = design_matrix(frame, design, data.node)
    keys = data.record_keys(frame.index)
    # one group: its label without a text pass over the rows
    stratum = group_labels(frame, strata).astype(str) if strata else np.full(len(frame), ALL_GROUP)
    start = time
    if not params.within_node():
        unit = UNIT_DAYS[params.time_unit]
        start, time = data.disclosure.group_intervals(stratum, time, keys, unit)
    if strata:
        labels, codes = np.unique(stratum, return_inverse=True)
    else:
        labels, codes = stratum[:1], np.zeros(len(frame), dtype=np.int64)
    g = group_rows(codes, time)
    xs, ev = x[g.order], event[g.order].astype(float)
    row = np.empty(len(frame), dtype=np.int64)
    row[g.order] = np.repeat(np.arange(len(g.starts)), np.diff(np.append(g.starts, len(frame))))
    return NodeCox(
        grouping=g,
        x=xs,
        moments=moment_matrix(xs),
        event_rows=np.flatnonzero(ev).astype(np.int32),
        d=group_sum(ev, g.starts).astype(np.int64),
        sx=group_sum(xs * ev[:, None], g.starts),
        labels=labels,
        start=start[g.order][g.starts],
        sizes={str(lab): int(k) for lab, k in zip(labels, np.bincount(codes), strict=True)},
        n=len(frame),
        records=data.records(frame.index, row),
        levels=level_counts(frame, [*params.covariates, *strata]),
    )


def event_columns(node: NodeCox, rg: RiskGroups, ties: str) -> dict[str, np.ndarray]:
    """The WebDISCO table, one row per stratum and time: moment sums over all rows (`a`), the
    events' covariate sums (`sx`) and, for Efron, the moment sums over the events (`e`; needed
    even for a single event here, since other nodes may have events at that time). `sx` and `e`
    are sums over no rows, so exactly 0, at times without events."""
    has = (rg.d > 0)[:, None]
    columns = {
        "group": node.labels[node.grouping.codes],
        "time": node.grouping.time,
        "start": node.start,
        "d": rg.d,
        "a": rg.a,
        "sx": np.where(has, rg.sx, 0.0),  # +0.0: a -0.0 would tell a sign of non-events' sums
    }
    if ties == "efron":
        columns["e"] = np.where(has, rg.e, 0.0)
    return columns


def pooled_groups(summaries: dict[str, Summary], p: int, ties: str) -> tuple[RiskGroups, int, int]:
    """Add the nodes' event-time tables by (stratum, time): the pooled risk-set sums."""
    parts = [s.event_times("risk_sets") for s in summaries.values()]
    n = sum(sum(part.group_sizes.values()) for part in parts)
    tables = [part.columns for part in parts if len(part)]
    if not tables:
        raise AnalysisError("no node sent risk-set sums")
    q = n_moments(p)
    _, codes = np.unique(np.concatenate([t["group"] for t in tables]), return_inverse=True)
    g = group_rows(codes, np.concatenate([t["time"] for t in tables]).astype(float))

    def stack(key: str, width: int) -> np.ndarray:
        return group_sum(_block(tables, key, width)[g.order], g.starts)

    d = group_sum(_block(tables, "d", 0).astype(np.int64)[g.order], g.starts)
    e = stack("e", q) if ties == "efron" else np.zeros((len(g.starts), q))
    groups = RiskGroups(g.strata_starts, d, stack("a", q), e, stack("sx", p))
    return groups, n, int(d.sum())


def _block(tables: list[dict[str, np.ndarray]], key: str, width: int) -> np.ndarray:
    """Column `key` of every node's table stacked, each checked to have `width` values per row
    (0: one value per row)."""
    shape = (width,) if width else ()
    for t in tables:
        if key not in t:
            raise MalformedSummary(f"risk-set sums: column {key!r} is missing")
        if t[key].shape[1:] != shape:
            raise MalformedSummary(
                f"risk-set sums: column {key!r} has {t[key].shape[1:] or 1} values per row, "
                f"expected {width or 1}"
            )
    return np.concatenate([t[key] for t in tables])


def node_cache(cache: dict[str, Any], data: NodeData, params: CoxParams, design: dict) -> NodeCox:
    """The node's prepared arrays for this design, computed on the first fitting round only."""
    key = json.dumps(design, sort_keys=True)
    if cache.get("cox_key") != key:
        cache["cox_key"], cache["cox"] = key, prepare(data, params, design)
    return cache["cox"]


class Cox(Analysis[CoxParams]):
    """Describe round, then one round per Newton–Raphson step."""

    name: ClassVar[str] = "cox"
    params_model: ClassVar[type[AnalysisParams]] = CoxParams
    result_model: ClassVar[type[AnalysisResult]] = CoxResult

    def followup_outcome(self, params: CoxParams) -> str:
        return params.outcome

    def columns(self, params: CoxParams) -> list[str]:
        return [*survival_columns(params.outcome), *params.covariates, *params.local_strata()]

    def start(self, params: CoxParams) -> Continue:
        return Continue(request={"step": "describe"})

    def summary_parts(self, params: CoxParams, request: dict) -> dict[str, PartSpec]:
        """Describe: levels and moments; a step: the model and (across nodes) the risk sets,
        with one moment block (`a`, `e`) and one covariate sum (`sx`) per row and time."""
        if request.get("step") == "describe":
            return describe_spec(params.covariates)
        parts = {"model": PartSpec("aggregate")}
        if params.within_node():
            return parts
        p = len(request.get("beta") or [])
        q = n_moments(p)
        blocks = {"d": 0, "a": q, "sx": p, **({"e": q} if params.ties == "efron" else {})}
        parts["risk_sets"] = PartSpec(
            "event_times",
            group_by=tuple(params.local_strata()),
            columns=("start", *blocks),
            count_columns=("d",),
            widths=tuple(blocks.items()),
        )
        return parts

    def local(
        self, data: NodeData, params: CoxParams, request: dict[str, Any], cache: dict
    ) -> Summary:
        if request["step"] == "describe":
            frame = complete_cases(data, self.columns(params), data.node)
            return Summary(parts=describe(frame, params.covariates, {}, data))
        node = node_cache(cache, data, params, request["design"])
        beta = np.array(request["beta"], dtype=float)
        rg = node.groups(beta)
        # The model's rows and the records per level of its categorical terms, so the gate
        # applies min cohort, the parameter limit and the level rule to every Cox form.
        model = AggregatePart(
            n=node.n,
            n_params=len(beta),
            values={},
            records=node.records.single_row(),
            levels=node.levels,
        )
        if params.within_node():
            loglik, score, info = partial_likelihood(rg, beta, params.ties)
            model.values = {
                "loglik": loglik,
                "score": floats(score),
                "info": floats(info),
                "events": int(node.d.sum()),
            }
            return Summary(parts={"model": model})
        part = EventTimesPart(
            group_by=params.local_strata(),
            columns=event_columns(node, rg, params.ties),
            group_sizes=node.sizes,
            time_unit=params.time_unit,
            records=node.records,
        )
        return Summary(parts={"risk_sets": part, "model": model})

    def combine(
        self, params: CoxParams, state: Any, summaries: dict[str, Summary]
    ) -> Continue | Done:
        if not summaries:
            raise AnalysisError("no node answered")
        if state is None:
            design = make_design(summaries, params.covariates, params.reference, center=True)
            if not design["terms"]:
                raise AnalysisError("the covariates give no model terms (single levels only)")
            state = NewtonState(beta=np.zeros(len(design["terms"])), extra={"design": design})
            return Continue(request=self._request(state), state=state)
        design = state.extra["design"]
        loglik, score, info, n, events = self._evaluate(params, state.beta, summaries)
        if state.iterations == 0:  # the first evaluation is at β = 0: the null model
            state.extra["loglik_null"] = loglik
        out = newton_step(state, loglik, score, info, design["terms"], params.tol, params.max_iter)
        if isinstance(out, NewtonState):
            return Continue(request=self._request(out), state=out)
        result = self._result(params, design, out, n, events, state.extra["loglik_null"])
        result.method = self._method(params, summaries)
        return Done(result)

    def _method(self, params: CoxParams, summaries: dict[str, Summary]) -> dict[str, Any]:
        """Times exact (within-node sums, or every interval one time) or grouped; complete
        cases."""
        grouped = False
        if not params.within_node():
            tables = [s.event_times("risk_sets").columns for s in summaries.values()]
            grouped = any(bool((t["start"] < t["time"]).any()) for t in tables if "start" in t)
        method = times_method(grouped, params.time_unit)
        method["complete_cases"] = complete_case_note(self.columns(params))
        return method

    @staticmethod
    def _request(state: NewtonState) -> dict[str, Any]:
        return {"step": "fit", "design": state.extra["design"], "beta": floats(state.beta)}

    @staticmethod
    def _evaluate(
        params: CoxParams, beta: np.ndarray, summaries: dict[str, Summary]
    ) -> tuple[float, np.ndarray, np.ndarray, int, int]:
        """Pooled log partial likelihood, score and information at β."""
        if params.within_node():
            parts = [s.parts["model"] for s in summaries.values()]
            vals = [p.values for p in parts if isinstance(p, AggregatePart)]
            loglik = float(sum(v["loglik"] for v in vals))
            score = np.sum([np.asarray(v["score"], dtype=float) for v in vals], axis=0)
            info = np.sum([np.asarray(v["info"], dtype=float) for v in vals], axis=0)
            n = sum(p.n for p in parts if isinstance(p, AggregatePart))
            return loglik, score, info, n, int(sum(v["events"] for v in vals))
        groups, n, events = pooled_groups(summaries, len(beta), params.ties)
        loglik, score, info = partial_likelihood(groups, beta, params.ties)
        return loglik, score, info, n, events

    @staticmethod
    def _result(
        params: CoxParams,
        design: dict[str, Any],
        fit: NewtonFit,
        n: int,
        events: int,
        loglik_null: float,
    ) -> CoxResult:
        rows = wald_rows(fit, design["terms"], "hr")
        lr = max(2.0 * (fit.loglik - loglik_null), 0.0)
        return CoxResult(
            outcome=params.outcome,
            ties=params.ties,
            strata=params.strata,
            coefficients=[CoxTerm.model_validate(r) for r in rows],
            loglik=fit.loglik,
            loglik_null=loglik_null,
            lr_chi2=lr,
            lr_df=len(rows),
            lr_p=float(chdtrc(len(rows), lr)),
            n=n,
            events=events,
            iterations=fit.iterations,
            converged=fit.converged,
            reference=reference_levels(design),
        )


def reference_levels(design: dict[str, Any]) -> dict[str, str]:
    """Each categorical covariate's reference: its one pooled level without a dummy column."""
    coded: dict[str, set[str]] = {}
    for col in design["columns"]:
        if "level" in col:
            coded.setdefault(col["var"], set()).add(col["level"])
    return {
        var: next(lv for lv in levels if lv not in coded.get(var, set()))
        for var, levels in design["levels"].items()
    }

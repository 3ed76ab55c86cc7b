"""Log-rank test of k groups, exact from the same event-time tables as Kaplan–Meier.

The coordinator adds the nodes' per-group tables, so observed and expected events and their
hypergeometric covariance equal the pooled data's; the statistic is U' V⁻ U over the first k−1
groups with k−1 degrees of freedom (as lifelines' multivariate_logrank_test and R's survdiff).
Where a node grouped its times (`ccdp.disclosure.event_times`), each interval's events and
censorings sit at its end and the same statistic is Mantel's log-rank for grouped data (Mantel,
Cancer Chemother Rep 1966;50:163–170: a hypergeometric 2×k table per interval, with everyone
censored in an interval at risk for its deaths); the result's `method` says which. Unlike KM,
nothing is spread within intervals here (the test equals lifelines' on the interval ends);
grouping costs power where nodes group differently (a simulated registry of 3,410 children over
six nodes: χ² 262 exact, 235 at min_cell 5, 204 at 10; under the null, p stays uniform-like).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator
from rich.markup import escape
from rich.table import Table
from scipy.special import chdtrc

from ccdp.analyses._render import num, pval
from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Done, plural
from ccdp.analyses.event_data import NotedResult, SurvivalOutcome, TimeUnit, survival_columns
from ccdp.analyses.km import event_method, event_table_part, event_table_spec, pooled_event_table
from ccdp.analyses.node_data import NodeData
from ccdp.cohort.labels import group_label, term_label, variable_label
from ccdp.cohort.variables import check_variables
from ccdp.wire.errors import AnalysisError
from ccdp.wire.levels import label_key
from ccdp.wire.summary import PartSpec, Summary


class LogrankParams(AnalysisParams):
    """Log-rank: `outcome` os|efs compared across the groups formed by `by`."""

    outcome: SurvivalOutcome = "os"
    by: list[str] = Field(min_length=1, max_length=3)
    time_unit: TimeUnit = "day"

    @field_validator("by")
    @classmethod
    def _categorical(cls, v: list[str]) -> list[str]:
        return check_variables(v)


class LogrankGroup(BaseModel):
    group: str
    n: int
    observed: int
    expected: float


class LogrankResult(NotedResult):
    analysis: str = "logrank"
    outcome: str
    by: list[str]
    chi2: float
    df: int
    p: float
    groups: list[LogrankGroup]

    def __rich__(self) -> Table:
        t = Table(
            title=f"Log-rank test, {term_label(self.outcome)}: χ² = {self.chi2:.3f}, "
            f"df = {self.df}, p = {pval(self.p)}",
            caption=self.method_text() or None,
        )
        heading = ", ".join(variable_label(b) for b in self.by) or "Group"
        for col in (heading, "n", "observed", "expected", "O/E"):
            t.add_column(escape(col), justify="left" if col == heading else "right")
        for g in self.groups:
            ratio = g.observed / g.expected if g.expected > 0 else None
            t.add_row(
                escape(group_label(g.group, self.by)),
                str(g.n),
                str(g.observed),
                num(g.expected, 2),
                num(ratio, 2),
            )
        return t

    def brief(self) -> str:
        return f"{plural(len(self.groups), 'group')}, chi2 = {self.chi2:.3f}, p = {pval(self.p)}"

    def _summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame([g.model_dump() for g in self.groups])


def logrank_statistic(table: pd.DataFrame) -> tuple[float, int, list[LogrankGroup]]:
    """Observed/expected events and the k−1 df chi-square from a pooled (group, time) table."""
    order = sorted(table["group"].unique(), key=label_key)
    events = table.pivot(index="time", columns="group", values="events")[order].fillna(0.0)
    cens = table.pivot(index="time", columns="group", values="censored")[order].fillna(0.0)
    k = events.shape[1]
    if k < 2:
        raise AnalysisError("the log-rank test needs at least two groups with data")
    d_j = events.to_numpy()
    n_j = (d_j + cens.to_numpy())[::-1].cumsum(axis=0)[::-1]
    d = d_j.sum(axis=1)
    n = n_j.sum(axis=1)
    keep = d > 0
    d_j, n_j, d, n = d_j[keep], n_j[keep], d[keep], n[keep]
    share = n_j / n[:, None]
    expected = (share * d[:, None]).sum(axis=0)
    observed = d_j.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    cov = np.einsum("t,tj,tk->jk", factor, share, share)
    var = np.diag((factor[:, None] * share).sum(axis=0)) - cov
    u = (observed - expected)[:-1]
    stat = float(u @ np.linalg.pinv(var[:-1, :-1]) @ u)
    sizes = (events.to_numpy().sum(axis=0) + cens.to_numpy().sum(axis=0)).astype(int)
    groups = [
        LogrankGroup(group=str(g), n=int(s), observed=int(o), expected=float(e))
        for g, s, o, e in zip(events.columns, sizes, observed, expected, strict=True)
    ]
    return stat, k - 1, groups


class Logrank(Analysis[LogrankParams]):
    """One round: event-time tables by group, added at the coordinator."""

    name: ClassVar[str] = "logrank"
    params_model: ClassVar[type[AnalysisParams]] = LogrankParams
    result_model: ClassVar[type[AnalysisResult]] = LogrankResult

    def summary_parts(self, params: LogrankParams, request: dict) -> dict[str, PartSpec]:
        return event_table_spec(params.by)

    def followup_outcome(self, params: LogrankParams) -> str:
        return params.outcome

    def columns(self, params: LogrankParams) -> list[str]:
        return [*survival_columns(params.outcome), *params.by]

    def local(
        self, data: NodeData, params: LogrankParams, request: dict[str, Any], cache: dict
    ) -> Summary:
        part = event_table_part(data, params.outcome, params.by, params.time_unit)
        return Summary(parts={"events": part})

    def combine(self, params: LogrankParams, state: Any, summaries: dict[str, Summary]) -> Done:
        stat, df, groups = logrank_statistic(pooled_event_table(summaries))
        return Done(
            LogrankResult(
                outcome=params.outcome,
                by=params.by,
                chi2=stat,
                df=df,
                p=float(chdtrc(df, stat)),
                groups=groups,
                method=event_method(summaries, params.time_unit, self.columns(params)),
            )
        )

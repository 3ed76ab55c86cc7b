"""`incidence`: crude and age-standardised incidence rates per million person-years.

Each node sends its case counts by the requested groups and age group (and the group totals),
which disclosure control treats as one linked table, and its person-years from its `population`
table (public denominators). The coordinator pools cases and person-years per age group and
applies the direct method with a standard population (Segi world by default, from
ccdp.terminology.populations). Intervals: exact Poisson (Garwood) for crude rates; for
standardised rates the gamma method of Fay & Feuer (Stat Med 1997;16:791-801), as SEER*Stat,
or on request its modification by Tiwari, Clegg & Zou (Stat Methods Med Res 2006;15:547-569),
whose upper limit adds the mean per-person weight to the rate and the mean squared weight to the
variance (a 1/k event in each of the k age groups) where Fay & Feuer add the largest weight and
its square (one event in the group of largest weight).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy.special import gammaincinv

from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Done
from ccdp.analyses.cells import counts_part
from ccdp.analyses.node_data import NodeData
from ccdp.cohort.labels import term_label, value_label, variable_label
from ccdp.cohort.spec import CohortError
from ccdp.cohort.variables import check_variables
from ccdp.terminology.populations import AGE_RANGES, standard_weights
from ccdp.wire.levels import native, sort_key
from ccdp.wire.summary import CountsPart, PartSpec, Summary

PER = 1_000_000.0
# How each `ci` option computes the interval of a standardised rate, as a report states it.
CI_METHODS = {
    "fay_feuer": "gamma method of Fay & Feuer (1997)",
    "tiwari": "modified gamma method of Tiwari, Clegg & Zou (2006)",
}
CRUDE_CI_METHOD = "exact Poisson (Garwood)"
YEARS = "years"  # the part listing the years of diagnosis a node's denominators cover
# view variable -> how to read it from the population table (None: not a population dimension)
GROUPABLE: dict[str, str | None] = {
    "iccc_group": None,
    "iccc_subgroup": None,
    "country": "country",
    "sex": "sex",
    "diagnosis_year": "year",
    "diagnosis_period": "year",
    "age_group": "age_group",
}


# Cohort variables that narrow the cases' person-time more finely than the population table
# (by country, year, sex and age group) can: the denominators could not be narrowed to match.
UNFOLLOWED_BY_DENOMINATORS = ("age_at_diagnosis", "age_years", "diagnosis_date")


class IncidenceParams(AnalysisParams):
    """Rates by up to three of ICCC group/subgroup, country, sex, year, period, age group."""

    by: list[str] = Field(default_factory=list, max_length=3)
    ages: Literal["0-14", "0-19"] = "0-14"
    standard: str = "segi_world"
    ci: Literal["fay_feuer", "tiwari"] = "fay_feuer"
    level: float = Field(0.95, gt=0, lt=1)

    @field_validator("by")
    @classmethod
    def _groupable(cls, v: list[str]) -> list[str]:
        check_variables(v)
        bad = [b for b in v if b not in GROUPABLE]
        if bad:
            raise ValueError(f"incidence cannot be split by {bad}; use {', '.join(GROUPABLE)}")
        if len(set(v)) != len(v):
            raise ValueError("a variable is named twice")
        return v

    @property
    def pop_by(self) -> list[str]:
        """The grouping variables that also split the population (the denominators)."""
        return [b for b in self.by if GROUPABLE[b] is not None and b != "age_group"]


class IncidenceResult(AnalysisResult):
    """One row per group: cases, person-years, crude and standardised rates with intervals."""

    by: list[str]
    ages: str
    standard: str
    ci: str
    level: float
    per: float = PER
    rows: list[dict[str, Any]]
    # first and last year of diagnosis the nodes' population tables cover (None from older nodes)
    period: list[int] | None = None

    def method_text(self) -> str:
        """The period and interval methods in a sentence, for a table's caption."""
        years = f"years of diagnosis {self.period[0]}–{self.period[1]}; " if self.period else ""
        return (
            f"{years}ages {self.ages}, per million person-years, standardised to "
            f"{term_label(self.standard)}; "
            f"{self.level:.0%} CI: {CI_METHODS.get(self.ci, self.ci)} for the ASR, "
            f"{CRUDE_CI_METHOD} for crude rates"
        )

    def _summary_frame(self) -> pd.DataFrame:
        cols = [
            *self.by,
            "cases",
            "person_years",
            "crude_rate",
            "crude_ci_low",
            "crude_ci_high",
            "asr",
            "asr_ci_low",
            "asr_ci_high",
            "suppressed",
        ]
        return pd.DataFrame(self.rows, columns=cols)

    def __rich__(self) -> Any:
        from rich.table import Table

        pct = f"{self.level:.0%}"
        table = Table(
            title=f"Incidence per million person-years, ages {self.ages} "
            f"({term_label(self.standard)}, {self.ci.replace('_', '-')} {pct} CI)",
            caption=self.method_text(),
        )
        for col in [*self.by, "cases", "person-years", f"crude ({pct} CI)", f"ASR ({pct} CI)"]:
            head = variable_label(col) if col in self.by else col
            table.add_column(head, justify="left" if col in self.by else "right")

        def rate(r: dict, key: str) -> str:
            if r[key] is None:
                return "suppressed" if r["suppressed"] else "—"
            return f"{r[key]:.1f} ({r[key + '_ci_low']:.1f}–{r[key + '_ci_high']:.1f})"

        for r in self.rows:
            cases = "suppressed" if r["cases"] is None else str(r["cases"])
            table.add_row(
                *(value_label(b, r[b]) for b in self.by),
                cases,
                f"{r['person_years']:,.0f}",
                rate({**r, "crude": r["crude_rate"]}, "crude"),
                rate(r, "asr"),
            )
        return table

    def plot(self, **kw: Any) -> Any:
        """Bar chart of standardised rates with their intervals (a matplotlib Figure)."""
        from ccdp.analyses.plots import incidence_plot

        return incidence_plot(self, **kw)


def poisson_ci(cases: float, level: float) -> tuple[float, float]:
    """Exact (Garwood) interval for a Poisson count: chi2(2k).ppf / 2, i.e. the gamma(k)
    quantile, computed by `scipy.special` (scipy.stats costs a process ~0.8 s to import, paid
    by the first incidence study after a hub or node starts; same function underneath)."""
    alpha = 1 - level
    low = 0.0 if cases == 0 else gamma_ppf(alpha / 2, cases)
    high = gamma_ppf(1 - alpha / 2, cases + 1)
    return low, high


def gamma_ppf(q: float, shape: float, scale: float = 1.0) -> float:
    """The gamma distribution's quantile (as scipy.stats.gamma.ppf: NaN outside its domain)."""
    if not (shape > 0 and scale > 0):
        return float("nan")
    return float(gammaincinv(shape, q)) * scale


def gamma_ci(
    cases: np.ndarray, pyears: np.ndarray, weights: np.ndarray, level: float, method: str
) -> tuple[float, float, float]:
    """Directly standardised rate and its gamma interval (all per person-year).

    The upper limit is the gamma quantile for the rate and variance with a little added: Fay &
    Feuer add the largest per-person weight w_M and w_M²; Tiwari et al. the mean weight and the
    mean squared weight (not the squared mean), as asht::wspoissonTest(wmtype = "tcz")."""
    alpha = 1 - level
    wi = weights / pyears
    rate = float(np.sum(wi * cases))
    var = float(np.sum(wi**2 * cases))
    if method == "fay_feuer":
        add_rate, add_var = float(wi.max()), float(wi.max() ** 2)
    else:
        add_rate, add_var = float(wi.mean()), float(np.mean(wi**2))
    low = 0.0 if var == 0 else gamma_ppf(alpha / 2, rate**2 / var, var / rate)
    up_rate, up_var = rate + add_rate, var + add_var
    high = gamma_ppf(1 - alpha / 2, up_rate**2 / up_var, up_var / up_rate)
    return rate, low, high


def _period(year: pd.Series) -> pd.Series:
    start = (year // 5) * 5
    return start.astype(str) + "-" + (start + 4).astype(str)


def in_denominators(view: pd.DataFrame, pop: pd.DataFrame) -> pd.Series:
    """Rows whose country and year of diagnosis the population table covers: cases outside
    its person-time must not be divided by it."""
    covered = pd.MultiIndex.from_frame(
        pop[["country", "year"]].drop_duplicates().astype({"year": int})
    )
    keys = pd.MultiIndex.from_arrays([view["country"], view["diagnosis_year"].astype("Int64")])
    return pd.Series(keys.isin(covered), index=view.index)


def years_part(pop: pd.DataFrame) -> CountsPart:
    """The years of diagnosis the population table covers (public), so a result states its
    period."""
    return CountsPart(
        dims=["diagnosis_year"],
        counts=[],
        cells=[{"diagnosis_year": int(y)} for y in sorted(pop["year"].unique())],
    )


def population_cells(pop: pd.DataFrame, dims: list[str], ages: tuple[str, ...]) -> list[dict]:
    """Person-years by `dims` (view names) and age group, from the node's population table."""
    pop = pop[pop["age_group"].astype(str).isin(ages)].copy()
    pop["diagnosis_year"] = pop["year"].astype(int)
    pop["diagnosis_period"] = _period(pop["diagnosis_year"])
    keys = [*dims, "age_group"]
    summed = pop.groupby(keys, dropna=False)["population"].sum().reset_index()
    return [
        {**{k: native(r[k]) for k in keys}, "person_years": float(r["population"])}
        for r in summed.to_dict("records")
    ]


class Incidence(Analysis[IncidenceParams]):
    """Crude and age-standardised incidence per million person-years."""

    name: ClassVar[str] = "incidence"
    params_model: ClassVar[type[AnalysisParams]] = IncidenceParams
    result_model: ClassVar[type[AnalysisResult]] = IncidenceResult

    def summary_parts(self, params: IncidenceParams, request: dict) -> dict[str, PartSpec]:
        dims = tuple(b for b in params.by if b != "age_group")
        return {
            "cases": PartSpec("counts", dims=(*dims, "age_group"), counts=("cases",)),
            "totals": PartSpec("counts", dims=tuple(params.by), counts=("cases",)),
            "population": PartSpec("counts", dims=(*params.pop_by, "age_group"), counts=()),
            YEARS: PartSpec("counts", dims=("diagnosis_year",), counts=()),
        }

    def check_cohort(self, variables: set[str]) -> None:
        """Denominators follow country, sex, year and age group only: a cohort cut finer than
        those would divide part of the cases by all of the person-years."""
        finer = sorted(variables & set(UNFOLLOWED_BY_DENOMINATORS))
        if finer:
            raise CohortError(
                f"incidence: the cohort restricts {', '.join(finer)}, which the population "
                "table cannot follow; restrict age_group, diagnosis_year or diagnosis_period"
            )

    def columns(self, params: IncidenceParams) -> list[str]:
        cols = [*params.by, "age_group", "country", "diagnosis_year"]
        return list(dict.fromkeys(cols))

    def local(
        self,
        data: NodeData,
        params: IncidenceParams,
        request: dict,
        cache: dict,
    ) -> Summary:
        ages = AGE_RANGES[params.ages]
        pop = data.population()
        pop = pop[pop["age_group"].astype(str).isin(ages)]
        view = data.view(self.columns(params))
        cases = view[view["age_group"].isin(ages) & in_denominators(view, pop)]
        dims = [b for b in params.by if b != "age_group"]
        return Summary(
            parts={
                "cases": counts_part(data, cases, [*dims, "age_group"], count="cases"),
                "totals": counts_part(data, cases, list(params.by), count="cases"),
                "population": CountsPart(
                    dims=[*params.pop_by, "age_group"],
                    counts=[],
                    cells=population_cells(pop, params.pop_by, ages),
                ),
                YEARS: years_part(pop),
            }
        )

    def combine(
        self,
        params: IncidenceParams,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Done:
        ages = AGE_RANGES[params.ages]
        weights = standard_weights(params.standard, params.ages)
        dims = [b for b in params.by if b != "age_group"]
        cases = pool(summaries, "cases", [*dims, "age_group"], "cases")
        totals = pool(summaries, "totals", list(params.by), "cases")
        pyears = pool(summaries, "population", [*params.pop_by, "age_group"], "person_years")
        rows = []
        for group in sorted(totals, key=sort_key):
            values = dict(zip(params.by, group, strict=True))
            group_ages = [values["age_group"]] if "age_group" in values else list(ages)
            c = [cases.get((*(values[d] for d in dims), a), 0) for a in group_ages]
            p = [pyears.get((*(values[d] for d in params.pop_by), a), 0.0) for a in group_ages]
            rows.append(_rate_row(values, totals[group], c, p, weights.reindex(group_ages), params))
        return Done(
            IncidenceResult(
                analysis=self.name,
                by=list(params.by),
                ages=params.ages,
                standard=params.standard,
                ci=params.ci,
                level=params.level,
                rows=rows,
                period=period_covered(summaries),
            )
        )


def period_covered(summaries: dict[str, Summary]) -> list[int] | None:
    """First and last year of diagnosis over the nodes' denominators (None if none says)."""
    years = [
        int(c["diagnosis_year"])
        for s in summaries.values()
        if YEARS in s.parts
        for c in s.counts(YEARS).cells
    ]
    return [min(years), max(years)] if years else None


def pool(summaries: dict[str, Summary], part: str, dims: list[str], value: str) -> dict[tuple, Any]:
    """Sum a value over nodes per cell; None (suppressed somewhere) wins."""
    out: dict[tuple, Any] = {}
    for s in summaries.values():
        for cell in s.counts(part).cells:
            key = tuple(cell.get(d) for d in dims)
            v, prev = cell.get(value), out.get(key, 0)
            out[key] = None if v is None or prev is None else prev + v
    return out


def _rate_row(
    values: dict[str, Any],
    total: int | None,
    cases: list[int | None],
    pyears: list[float],
    weights: pd.Series,
    params: IncidenceParams,
) -> dict[str, Any]:
    """Crude and standardised rates of one group (None where suppression or zero
    person-years leave them undefined)."""
    py = float(sum(pyears))
    row: dict[str, Any] = {**values, "cases": total, "person_years": py}
    if total is not None and py > 0:
        lo, hi = poisson_ci(total, params.level)
        row |= {
            "crude_rate": total / py * PER,
            "crude_ci_low": lo / py * PER,
            "crude_ci_high": hi / py * PER,
        }
    else:
        row |= {"crude_rate": None, "crude_ci_low": None, "crude_ci_high": None}
    p = np.asarray(pyears, dtype=float)
    ok = all(c is not None for c in cases) and bool((p > 0).all())
    if ok:
        w = weights.to_numpy(dtype=float)
        rate, lo, hi = gamma_ci(np.asarray(cases, float), p, w / w.sum(), params.level, params.ci)
        row |= {"asr": rate * PER, "asr_ci_low": lo * PER, "asr_ci_high": hi * PER}
    else:
        row |= {"asr": None, "asr_ci_low": None, "asr_ci_high": None}
    row["suppressed"] = total is None or any(c is None for c in cases)
    return row

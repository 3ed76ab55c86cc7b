"""Logistic and Poisson regression by federated Newton–Raphson (IRLS), exact as DataSHIELD ds.glm.

Round 0 learns the pooled covariate levels and the outcome's mean (the intercept-only start).
Each further round every node evaluates, at the coordinator's β, its log-likelihood, deviance,
score X'(y − μ) and information X'WX (an AggregatePart); the coordinator adds them and steps.
Both links are canonical, so Newton–Raphson is IRLS and the observed and expected information
coincide: coefficients and standard errors equal statsmodels' GLM on the pooled data.

Poisson with `outcome: os|efs` models the event count with offset log(person-time) (the os/efs
time in days, on the node's grid), so exp(coef) are rate ratios; with another count outcome a
`person_time` column may give the offset.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator
from rich.markup import escape
from rich.table import Table
from scipy.special import chdtrc, expit, gammaln

from ccdp.analyses._design import (
    MOMENTS,
    describe,
    describe_spec,
    design_matrix,
    level_counts,
    make_design,
    pooled_sums,
)
from ccdp.analyses._newton import NewtonFit, NewtonState, newton_step, wald_rows
from ccdp.analyses._render import num, pval
from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Continue, Done, plural
from ccdp.analyses.event_data import (
    NotedResult,
    TimeUnit,
    coarsen,
    complete_case_note,
    complete_cases,
    floats,
    survival_columns,
)
from ccdp.analyses.node_data import NodeData
from ccdp.analyses.tables import ratio_ci, term_order
from ccdp.cohort.labels import model_term_label, variable_label
from ccdp.cohort.variables import check_variable, check_variables
from ccdp.wire.errors import AnalysisError, InsufficientData
from ccdp.wire.summary import AggregatePart, PartSpec, Summary

INTERCEPT = "(Intercept)"
SURVIVAL = ("os", "efs")


class GLMParams(AnalysisParams):
    """Shared GLM parameters: outcome, covariates, reference levels, iteration control."""

    outcome: str
    covariates: list[str] = Field(default_factory=list)
    reference: dict[str, str | int | float] = Field(default_factory=dict)
    max_iter: int = Field(default=50, ge=1, le=200)
    tol: float = Field(default=1e-10, gt=0)

    @field_validator("covariates")
    @classmethod
    def _modelled(cls, v: list[str]) -> list[str]:
        return check_variables(v, "covariate")


class LogisticParams(GLMParams):
    """Logistic regression of a 0/1 view column (`os`/`efs` mean their event indicators)."""

    @field_validator("outcome")
    @classmethod
    def _binary(cls, v: str) -> str:
        return v if v in SURVIVAL else check_variable(v, "binary")


class PoissonParams(GLMParams):
    """Poisson regression of counts; for `os`/`efs` the events with log person-time offset."""

    person_time: str | None = None
    time_unit: TimeUnit = "day"

    @field_validator("outcome")
    @classmethod
    def _count(cls, v: str) -> str:
        return v if v in SURVIVAL else check_variable(v, "count")

    @field_validator("person_time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        return v if v is None else check_variable(v, "time")


class GLMTerm(BaseModel):
    term: str
    coef: float
    se: float
    estimate: float
    ci_low: float
    ci_high: float
    p: float


class GLMResult(NotedResult):
    """Coefficients with exp(coef) as `estimate` (odds or rate ratio) and Wald 95% CIs; `method`
    says the fit is exact and which rows it uses (complete cases)."""

    outcome: str
    coefficients: list[GLMTerm]
    deviance: float
    null_deviance: float
    lr_chi2: float
    lr_df: int
    lr_p: float
    loglik: float
    aic: float
    n: int
    df_resid: int
    iterations: int
    converged: bool

    def __rich__(self) -> Table:
        ratio = "OR" if self.analysis == "logistic" else "RR"
        title = "Logistic regression" if self.analysis == "logistic" else "Poisson regression"
        t = Table(
            title=f"{title} of {variable_label(self.outcome)}",
            caption=f"n = {self.n}, deviance = {self.deviance:.4f} on {self.df_resid} df, "
            f"null deviance = {self.null_deviance:.4f}, log-likelihood = {self.loglik:.4f}, "
            f"AIC = {self.aic:.2f}\nlikelihood-ratio test χ² = {self.lr_chi2:.3f} on "
            f"{self.lr_df} df, p = {pval(self.lr_p)}; "
            f"iterations = {self.iterations}"
            + ("" if self.converged else "\nNOT CONVERGED")
            + (f"\n{escape(self.method_text())}" if self.method_text() else ""),
        )
        for col in ("term", "coef", "se", f"{ratio} (95% CI)", "p"):
            t.add_column(col, justify="left" if col == "term" else "right", no_wrap=col == "term")
        terms = self.coefficients
        for c in (terms[i] for i in term_order([c.term for c in terms])):
            t.add_row(
                escape(model_term_label(c.term)),
                num(c.coef),
                num(c.se),
                ratio_ci(c.estimate, c.ci_low, c.ci_high),
                pval(c.p),
            )
        return t

    def brief(self) -> str:
        return f"{plural(len(self.coefficients), 'term')}, {plural(self.n, 'subject')}"

    def _summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.model_dump() for c in self.coefficients]).set_index("term")

    def plot(self, **kw: Any) -> Any:
        """Forest plot of odds or rate ratios (a matplotlib Figure)."""
        from ccdp.analyses.plots import forest_plot

        return forest_plot(self, **kw)


G = TypeVar("G", bound=GLMParams)


class _GLM(Analysis[G], Generic[G]):
    """The federated Newton–Raphson loop; subclasses give the family."""

    family: ClassVar[str]
    result_model: ClassVar[type[AnalysisResult]] = GLMResult

    def summary_parts(self, params: G, request: dict) -> dict[str, PartSpec]:
        """Describe: levels and moments; a Newton step: the model's sums."""
        if request.get("step") == "describe":
            return describe_spec(params.covariates)
        return {"model": PartSpec("aggregate")}

    # --- family-specific pieces -------------------------------------------------------------
    @abstractmethod
    def outcome_columns(self, params: G) -> tuple[str, str | None]:
        """(response column, person-time column or None)."""

    @abstractmethod
    def null_sums(self, y: np.ndarray, offset: np.ndarray) -> dict[str, float]:
        """The node's totals from which the intercept-only (null) model follows in closed form."""

    @abstractmethod
    def null_model(self, sums: dict[str, float], n: int) -> tuple[float, float]:
        """(intercept, deviance) of the intercept-only model from the pooled totals."""

    @abstractmethod
    def moments(
        self, x: np.ndarray, y: np.ndarray, offset: np.ndarray, beta: np.ndarray
    ) -> dict[str, Any]:
        """Log-likelihood, deviance, score and information of the node's rows at β."""

    # --- shared -----------------------------------------------------------------------------
    def columns(self, params: G) -> list[str]:
        y, pt = self.outcome_columns(params)
        return [y, *([pt] if pt else []), *params.covariates]

    def start(self, params: G) -> Continue:
        return Continue(request={"step": "describe"})

    def node_frame(self, data: NodeData, params: G) -> pd.DataFrame:
        """Complete cases with a valid response (and positive person-time)."""
        y, pt = self.outcome_columns(params)
        frame = complete_cases(data, self.columns(params), data.node)
        if pt is not None:
            frame = frame[frame[pt] > 0]
            if frame.empty:
                raise InsufficientData(f"node {data.node}: no rows with positive {pt}")
        self.check_response(frame[y], y, data.node)
        return frame

    def check_response(self, y: pd.Series, name: str, node: str) -> None:
        values = pd.to_numeric(y, errors="coerce")
        if values.isna().any() or (values < 0).any():
            raise AnalysisError(f"node {node}: {name} must be a non-negative number")

    def response(self, frame: pd.DataFrame, params: G) -> tuple[np.ndarray, np.ndarray]:
        """Response and offset (log person-time on the node's grid, or zeros)."""
        y, pt = self.outcome_columns(params)
        offset = np.zeros(len(frame))
        if pt is not None:
            t = frame[pt].to_numpy(dtype=float)
            if isinstance(params, PoissonParams) and params.outcome in SURVIVAL:
                t = coarsen(t, params.time_unit)
            offset = np.log(t)
        return frame[y].to_numpy(dtype=float), offset

    def arrays(
        self, frame: pd.DataFrame, params: G, design: dict[str, Any], node: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model matrix with intercept, response and offset."""
        # column-major: each round's x·w and xᵀ(x·w) walk the columns
        x = np.asfortranarray(
            np.column_stack([np.ones(len(frame)), design_matrix(frame, design, node)])
        )
        return (x, *self.response(frame, params))

    def local(self, data: NodeData, params: G, request: dict[str, Any], cache: dict) -> Summary:
        if request["step"] == "describe":
            # kept for the first fitting round: the same rows, read and checked once
            frame = cache["glm_frame"] = self.node_frame(data, params)
            y, offset = self.response(frame, params)
            sums = self.null_sums(y, offset)
            parts = describe(frame, params.covariates, sums, data, self.binary(params))
            moments = parts[MOMENTS]
            if isinstance(moments, AggregatePart) and moments.levels is not None:
                # the same rows' levels, for the first fitting round
                cache["glm_levels"] = {k: list(v) for k, v in moments.levels.items()}
            return Summary(parts=parts)
        design = request["design"]
        if cache.get("glm_design") != design:
            frame, levels = cache.pop("glm_frame", None), cache.pop("glm_levels", None)
            if frame is None or levels is None:
                frame, levels = self.node_frame(data, params), None
            cache["glm_design"] = design
            cache["glm"] = self.arrays(frame, params, design, data.node)
            if levels is None:
                names = [*params.covariates, *([b] if (b := self.binary(params)) else [])]
                levels = level_counts(frame, names)
            cache["glm_rows"] = (data.records(frame.index), levels)
        x, y, offset = cache["glm"]
        records, levels = cache["glm_rows"]
        beta = np.array(request["beta"], dtype=float)
        values = self.moments(x, y, offset, beta)
        model = AggregatePart(
            n=len(y),
            n_params=len(beta),
            values=values,
            records=records,
            levels=levels,
        )
        return Summary(parts={"model": model})

    def binary(self, params: G) -> str | None:
        """The outcome column whose two levels the level rule covers (logistic only)."""
        return None

    def combine(self, params: G, state: Any, summaries: dict[str, Summary]) -> Continue | Done:
        if not summaries:
            raise AnalysisError("no node answered")
        if state is None:
            design = make_design(summaries, params.covariates, params.reference, center=False)
            design["terms"] = [INTERCEPT, *design["terms"]]
            n, sums = pooled_sums(summaries)
            beta = np.zeros(len(design["terms"]))
            beta[0], null_deviance = self.null_model(sums, n)
            state = NewtonState(beta=beta, extra={"design": design, "null": null_deviance})
            return Continue(request=self._request(state), state=state)
        vals = [s.parts["model"] for s in summaries.values()]
        parts = [p for p in vals if isinstance(p, AggregatePart)]
        loglik = float(sum(p.values["loglik"] for p in parts))
        score = np.sum([np.asarray(p.values["score"], dtype=float) for p in parts], axis=0)
        info = np.sum([np.asarray(p.values["info"], dtype=float) for p in parts], axis=0)
        design = state.extra["design"]
        out = newton_step(state, loglik, score, info, design["terms"], params.tol, params.max_iter)
        if isinstance(out, NewtonState):
            return Continue(request=self._request(out), state=out)
        n = sum(p.n for p in parts)
        deviance = float(sum(p.values["deviance"] for p in parts))
        return Done(self._result(params, design, out, n, deviance, state.extra["null"]))

    @staticmethod
    def _request(state: NewtonState) -> dict[str, Any]:
        return {"step": "fit", "design": state.extra["design"], "beta": floats(state.beta)}

    def _result(
        self,
        params: G,
        design: dict[str, Any],
        fit: NewtonFit,
        n: int,
        deviance: float,
        null_deviance: float,
    ) -> GLMResult:
        p = len(fit.beta)
        lr = max(null_deviance - deviance, 0.0)
        return GLMResult(
            analysis=self.name,
            outcome=params.outcome,
            coefficients=[
                GLMTerm.model_validate(r) for r in wald_rows(fit, design["terms"], "estimate")
            ],
            deviance=deviance,
            null_deviance=null_deviance,
            lr_chi2=lr,
            lr_df=p - 1,
            lr_p=float(chdtrc(p - 1, lr)) if p > 1 else 1.0,
            loglik=fit.loglik,
            aic=-2.0 * fit.loglik + 2.0 * p,
            n=n,
            df_resid=n - p,
            iterations=fit.iterations,
            converged=fit.converged,
            method={"fit": "exact", "complete_cases": complete_case_note(self.columns(params))},
        )


def _sums(x: np.ndarray, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """Score and information, the parts every canonical-link family shares."""
    return {"score": floats(x.T @ (y - mu)), "info": floats((x * w[:, None]).T @ x)}


class Logistic(_GLM[LogisticParams]):
    name: ClassVar[str] = "logistic"
    params_model: ClassVar[type[AnalysisParams]] = LogisticParams

    def outcome_columns(self, params: LogisticParams) -> tuple[str, str | None]:
        o = params.outcome
        return (survival_columns(o)[1] if o in SURVIVAL else o), None

    def binary(self, params: LogisticParams) -> str | None:
        return self.outcome_columns(params)[0]

    def check_response(self, y: pd.Series, name: str, node: str) -> None:
        values = pd.to_numeric(y.astype(float), errors="coerce")
        if not values.isin([0.0, 1.0]).all():
            raise AnalysisError(f"node {node}: the logistic outcome {name} must be 0/1")

    def null_sums(self, y: np.ndarray, offset: np.ndarray) -> dict[str, float]:
        return {"y": float(y.sum())}

    def null_model(self, sums: dict[str, float], n: int) -> tuple[float, float]:
        """Intercept-only logistic: μ = ȳ."""
        s = sums["y"]
        if not 0 < s < n:
            raise AnalysisError("the outcome takes one value only in the pooled cohort")
        mean = s / n
        deviance = -2.0 * (s * np.log(mean) + (n - s) * np.log1p(-mean))
        return float(np.log(mean / (1.0 - mean))), float(deviance)

    def moments(
        self, x: np.ndarray, y: np.ndarray, offset: np.ndarray, beta: np.ndarray
    ) -> dict[str, Any]:
        eta = x @ beta + offset
        mu = expit(eta)
        loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        return {"loglik": loglik, "deviance": -2.0 * loglik, **_sums(x, y, mu, mu * (1.0 - mu))}


class Poisson(_GLM[PoissonParams]):
    name: ClassVar[str] = "poisson"
    params_model: ClassVar[type[AnalysisParams]] = PoissonParams

    def followup_outcome(self, params: PoissonParams) -> str | None:
        """os/efs rates need each child's follow-up time (unless another person-time is named)."""
        return params.outcome if params.outcome in SURVIVAL and not params.person_time else None

    def outcome_columns(self, params: PoissonParams) -> tuple[str, str | None]:
        if params.outcome in SURVIVAL:
            time, event = survival_columns(params.outcome)
            return event, params.person_time or time
        return params.outcome, params.person_time

    def null_sums(self, y: np.ndarray, offset: np.ndarray) -> dict[str, float]:
        with np.errstate(divide="ignore", invalid="ignore"):
            ylogy = np.where(y > 0, y * np.log(y), 0.0)
        return {
            "y": float(y.sum()),
            "exposure": float(np.exp(offset).sum()),
            "ylogy": float(ylogy.sum()),
            "ylogt": float(y @ offset),
        }

    def null_model(self, sums: dict[str, float], n: int) -> tuple[float, float]:
        """Intercept-only Poisson with offset log t: μ_i = t_i·Σy/Σt."""
        s = sums["y"]
        if s <= 0:
            raise AnalysisError("no events in the pooled cohort")
        log_rate = float(np.log(s / sums["exposure"]))
        deviance = 2.0 * (sums["ylogy"] - sums["ylogt"] - s * log_rate)
        return log_rate, float(deviance)

    def moments(
        self, x: np.ndarray, y: np.ndarray, offset: np.ndarray, beta: np.ndarray
    ) -> dict[str, Any]:
        eta = x @ beta + offset
        mu = np.exp(eta)
        # log Γ(y + 1) and y·log y are 0 at y = 0 and y = 1: summed where y is neither (a
        # non-integer response included); y·log(y/μ) = y·log y − y·η
        many = (y != 0.0) & (y != 1.0)
        y_eta, mu_sum = float(y @ eta), float(mu.sum())
        loglik = y_eta - mu_sum - float(np.sum(gammaln(y[many] + 1.0)))
        ylogy = float(np.sum(y[many] * np.log(y[many]))) - y_eta
        deviance = 2.0 * (ylogy - float(y.sum()) + mu_sum)
        return {"loglik": loglik, "deviance": deviance, **_sums(x, y, mu, mu)}

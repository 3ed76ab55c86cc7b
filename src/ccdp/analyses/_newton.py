"""Newton–Raphson at the coordinator over summed log-likelihood, score and information.

Shared by Cox (partial likelihood) and the GLMs (canonical links, where Newton is IRLS). Each
round the nodes evaluate at the current β; the coordinator adds their sums and either stops (the
next step is below `tol`, so the evaluated β is the maximum to that precision and its information
gives the standard errors) or steps, halving steps that lower the log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from ccdp.wire.errors import AnalysisError

Z95 = float(ndtri(0.975))


class NotConverged(AnalysisError):
    """Newton–Raphson ran out of iterations before the estimate settled."""


MAX_HALVINGS = 30


@dataclass
class NewtonState:
    """Where the iteration stands: the β being evaluated and the best evaluated point so far."""

    beta: np.ndarray
    iterations: int = 0
    halvings: int = 0
    best_beta: np.ndarray | None = None
    best_loglik: float = -np.inf
    extra: dict = field(default_factory=dict)


@dataclass
class NewtonFit:
    beta: np.ndarray
    se: np.ndarray
    loglik: float
    iterations: int
    converged: bool


def solve_information(
    info: np.ndarray, score: np.ndarray, terms: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Newton step and covariance; refuses a singular (or numerically singular) information."""
    singular = AnalysisError(
        f"the information matrix is singular: check {', '.join(terms)} for constant or "
        "collinear terms, or an outcome separated by a term (an infinite estimate)"
    )
    if not np.isfinite(info).all() or not np.isfinite(score).all():
        raise AnalysisError("the score or information is not finite at the current estimate")
    eig = np.linalg.eigvalsh(info)
    if eig.size and eig[0] <= 1e-12 * max(eig[-1], 1e-300):
        raise singular
    try:
        return np.linalg.solve(info, score), np.linalg.inv(info)
    except np.linalg.LinAlgError as exc:
        raise singular from exc


def newton_step(
    state: NewtonState,
    loglik: float,
    score: np.ndarray,
    info: np.ndarray,
    terms: list[str],
    tol: float,
    max_iter: int,
) -> NewtonState | NewtonFit:
    """Next β to evaluate, or the fit when converged (or out of iterations)."""
    state.iterations += 1
    if not np.isfinite(loglik):
        raise AnalysisError("the log-likelihood is not finite at the current estimate")
    worse = loglik < state.best_loglik - 1e-12 * (1.0 + abs(state.best_loglik))
    if worse and state.halvings < MAX_HALVINGS and state.best_beta is not None:
        state.halvings += 1
        state.beta = (state.beta + state.best_beta) / 2.0
        return state
    state.halvings = 0
    state.best_beta, state.best_loglik = state.beta.copy(), loglik
    delta, cov = solve_information(info, score, terms)
    converged = bool(np.max(np.abs(delta), initial=0.0) < tol)
    if converged:
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        return NewtonFit(state.beta.copy(), se, loglik, state.iterations, converged)
    if state.iterations >= max_iter:
        # an unconverged estimate (max_iter: 1 stops before a singular model shows itself) is
        # whatever the first steps made of the nodes' sums, not a result: nothing is released
        raise NotConverged(
            f"the model did not converge within max_iter = {max_iter} iterations; "
            "no estimate is released"
        )
    state.beta = state.beta + delta
    return state


def wald_rows(fit: NewtonFit, terms: list[str], ratio_key: str) -> list[dict[str, float | str]]:
    """coef, se, ratio (exp coef), 95% CI of the ratio and two-sided Wald p for each term."""
    rows = []
    for term, b, se in zip(terms, fit.beta.tolist(), fit.se.tolist(), strict=True):
        z = b / se if se > 0 else np.nan
        rows.append(
            {
                "term": term,
                "coef": b,
                "se": se,
                ratio_key: float(np.exp(b)),
                "ci_low": float(np.exp(b - Z95 * se)),
                "ci_high": float(np.exp(b + Z95 * se)),
                "p": float(2.0 * ndtr(-abs(z))),
            }
        )
    return rows

"""The coordinator loop: drive an analysis's rounds until it is done, whatever the transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Done
from ccdp.errors import CcdpError
from ccdp.wire.summary import Summary

AskRound = Callable[[int, dict[str, Any]], dict[str, Summary]]


class NoConvergence(CcdpError):
    """An iterative analysis did not finish within its round limit."""


def drive(
    analysis: Analysis, params: AnalysisParams, ask: AskRound, max_rounds: int = 100
) -> AnalysisResult:
    """Run rounds: `ask(round, request)` returns the answering nodes' summaries for that round."""
    step = analysis.start(params)
    for round_no in range(max_rounds):
        summaries = ask(round_no, step.request)
        out = analysis.combine(params, step.state, summaries)
        if isinstance(out, Done):
            return out.result
        step = out
    raise NoConvergence(f"{analysis.name} did not finish in {max_rounds} rounds")

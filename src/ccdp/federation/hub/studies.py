"""The hub's study executor: the analyses stage's `load_study`/`run_study`, unchanged.

So a study submitted to the hub is validated and run by the very code `ccdp run` uses in one
process; only the transport differs (HubTransport instead of InProcessTransport).
"""

from __future__ import annotations

from typing import Any

from ccdp.federation.hub.runner import PreparedStudy
from ccdp.wire.protocol import Transport

DEFAULT_TIMEOUT = 300.0


class SpecExecutor:
    """Validates with `load_study`, runs with `run_study`, stores `StudyResult.to_json()`."""

    def prepare(self, spec: dict[str, Any]) -> PreparedStudy:
        from ccdp.federation.study import load_study

        study = load_study(spec)
        return PreparedStudy(
            spec=spec,
            analysis=study.analysis,
            title=study.title,
            nodes=study.nodes,
            min_nodes=study.min_nodes,
            timeout=study.timeout if study.timeout is not None else DEFAULT_TIMEOUT,
        )

    def run(self, spec: dict[str, Any], transport: Transport) -> dict[str, Any]:
        from ccdp.federation.study import run_study

        return run_study(spec, transport).to_json()

"""A tiny real analysis and study executor for the network tests, runnable as hub or node process.

`total` sums a column over the nodes in one round; `rounds` asks K rounds, each weighting the sum by
the round number, so a resumed study that re-asked a round would count it twice and be caught.
The hub and node processes started here are the production hub and agent (`serve`, `NodeAgent`)
with these stand-ins for the analyses stage's study runner and LocalNode.

    python -m tests.federation.standin hub --db URL --port P [--workers N --study-lease S]
    python -m tests.federation.standin node --hub URL --token T --data FILE [--delay S]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Continue, Done
from ccdp.analyses.node_data import FrameData, NodeData
from ccdp.errors import SpecError
from ccdp.federation.coordinator import drive
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.context import Admission
from ccdp.federation.hub.runner import PreparedStudy
from ccdp.wire.protocol import Answer, Task, Transport
from ccdp.wire.summary import AggregatePart, Summary


class RoundsParams(AnalysisParams):
    rounds: int = Field(default=1, ge=1, le=50)


class TotalResult(AnalysisResult):
    total: float
    n: int
    rounds: int


class RoundsAnalysis(Analysis):
    """Round k asks each node for (k+1) * sum(x); the result is the sum over rounds."""

    name: ClassVar[str] = "rounds"
    params_model: ClassVar[type[AnalysisParams]] = RoundsParams

    def start(self, params: AnalysisParams) -> Continue:
        return Continue(request={"k": 0}, state={"total": 0.0, "n": 0})

    def local(
        self, data: NodeData, params: AnalysisParams, request: dict[str, Any], cache: dict
    ) -> Summary:
        if "x" not in cache:
            cache["x"] = data.view(["x"])["x"].to_numpy()
            cache["reads"] = cache.get("reads", 0) + 1
        x = cache["x"]
        k = request["k"]
        part = AggregatePart(n=len(x), n_params=1, values={"sum": float(x.sum() * (k + 1))})
        return Summary(parts={"s": part})

    def combine(self, params: AnalysisParams, state: Any, summaries: dict[str, Summary]):
        assert isinstance(params, RoundsParams)
        k = state.get("k", 0)
        total = state["total"] + sum(s.parts["s"].values["sum"] for s in summaries.values())
        n = sum(s.parts["s"].n for s in summaries.values())
        if k + 1 >= params.rounds:
            return Done(TotalResult(analysis=self.name, total=total, n=n, rounds=k + 1))
        return Continue(request={"k": k + 1}, state={"total": total, "n": n, "k": k + 1})


class StandinSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = "stand-in study"
    analysis: str = "rounds"
    rounds: int = 1
    nodes: list[str] | None = None
    min_nodes: int | None = None
    timeout: float = 30.0


class StandinExecutor:
    """Plays the analyses stage's `run_study`: drive over a transport, report node statuses."""

    analysis = RoundsAnalysis()

    def prepare(self, spec: dict[str, Any]) -> PreparedStudy:
        try:
            s = StandinSpec.model_validate(spec)
        except ValidationError as exc:
            raise SpecError(f"study spec: {exc}") from exc
        return PreparedStudy(
            spec=s.model_dump(),
            analysis=s.analysis,
            title=s.title,
            nodes=s.nodes,
            min_nodes=s.min_nodes,
            timeout=s.timeout,
        )

    def run(self, spec: dict[str, Any], transport: Transport) -> dict[str, Any]:
        s = StandinSpec.model_validate(spec)
        params = RoundsParams(rounds=s.rounds)
        active = transport.nodes()
        status: dict[str, dict[str, Any]] = {}

        def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
            nonlocal active
            task = Task(
                task_id=uuid.uuid4().hex,
                study_id="standin",
                round=round_no,
                analysis="rounds",
                params=params.model_dump(),
                request=request,
            )
            answers = transport.ask(task, active)
            for node, a in answers.items():
                if a.status != "answered":
                    status[node] = {"status": a.status, "reason": a.reason}
            active = [n for n in active if answers[n].status == "answered"]
            return {n: Summary.from_dict(answers[n].summary or {}) for n in active}

        result = drive(self.analysis, params, ask)
        for node in active:
            status[node] = {"status": "answered", "reason": None}
        need = s.min_nodes if s.min_nodes is not None else len(transport.nodes())
        return {
            "analysis": "rounds",
            "nodes": dict(sorted(status.items())),
            "min_nodes": need,
            "min_nodes_met": len(active) >= need,
            "result": result.model_dump(mode="json"),
        }


class StandinNode:
    """Plays LocalNode: answers `rounds` tasks from a list of numbers, keeping a per-study cache."""

    def __init__(self, xs: list[float], delay: float = 0.0, name: str = "standin") -> None:
        self.data = FrameData(pd.DataFrame({"x": xs}), node=name)
        self.delay = delay
        self.caches: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def answer(self, task: Task) -> Answer:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        params = RoundsParams.model_validate(task.params)
        cache = self.caches.setdefault(task.study_id, {})
        summary = RoundsAnalysis().local(self.data, params, task.request, cache)
        return Answer(
            task_id=task.task_id, node=self.data.node, status="answered", summary=summary.to_dict()
        )


def _main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hub")
    h.add_argument("--db", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--certfile")
    h.add_argument("--keyfile")
    h.add_argument("--audit-key")
    h.add_argument("--workers", type=int, default=1)
    h.add_argument("--study-lease", type=float, default=15.0)
    h.add_argument("--dashboard", action="store_true")
    n = sub.add_parser("node")
    n.add_argument("--hub", required=True)
    n.add_argument("--token", required=True)
    n.add_argument("--data", required=True)
    n.add_argument("--delay", type=float, default=0.0)
    n.add_argument("--cafile")
    args = ap.parse_args()
    if args.cmd == "hub":
        from ccdp.federation.hub.server import serve
        from ccdp.web.dashboard import mount_dashboard

        serve(
            args.db,
            port=args.port,
            certfile=Path(args.certfile) if args.certfile else None,
            keyfile=Path(args.keyfile) if args.keyfile else None,
            executor=StandinExecutor(),
            poll=0.2,
            open_studies=True,
            audit_key=Path(args.audit_key) if args.audit_key else None,
            workers=args.workers,
            study_lease=args.study_lease,
            dashboard=mount_dashboard if args.dashboard else None,
        )
        return
    from ccdp.federation.client import tls_verify
    from ccdp.federation.node.agent import Backoff, NodeAgent

    xs = json.loads(Path(args.data).read_text())
    node = StandinNode(xs, delay=args.delay)
    agent = NodeAgent(
        args.hub,
        args.token,
        node.answer,
        verify=tls_verify(args.cafile),
        wait=5,
        heartbeat=1,
        backoff=Backoff(initial=0.2, cap=1.0),
        on_event=lambda m: print(m, flush=True),
    )
    agent.run(threading.Event())


if __name__ == "__main__":
    _main()


class ForwardingHub(Hub):
    """A hub that skips its project check (a compromised or buggy hub): it forwards every study
    to every node it names, so only the nodes' own records stand in the way."""

    def admit_study(self, s, owner, spec, analysis, chosen):  # type: ignore[no-untyped-def]
        return Admission(spec.get("project"), list(chosen), {})

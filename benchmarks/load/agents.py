"""A pool of lightweight node agents: many real `NodeAgent`s in one process, one thread each.

Why: 50 `ccdp node run` interpreters cost 50 imports of DuckDB, pandas and the analyses (minutes
of CPU on a 2-core machine before the first task), which a 3-minute CI test cannot afford. What
stays real: each agent is the package's own `NodeAgent` (the same long-poll, heartbeat, outbox,
back-off and wire models `ccdp node run` uses), built the way `ccdp node run --open` builds it,
and each answer is computed by the package's `LocalNode` over the agent's own DuckDB store
(policy, disclosure gate, audit log, ledger). Only the process boundary differs.

The one addition: every answer the hub acknowledges is written down (task id, hub status), so
the harness can tell whether the hub ever accepted one node's answer to one task twice.

    python benchmarks/load/agents.py --hub URL --config agents.json --out posted.json

`agents.json` is a list of {"store": path, "token": token}; on SIGTERM the pool writes `--out`
and exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from ccdp.federation.node.agent import HubUnavailable, NodeAgent  # noqa: E402
from ccdp.federation.node.serving import serving_agent  # noqa: E402
from ccdp.wire.protocol import Answer, Task  # noqa: E402

POSTED: list[dict[str, Any]] = []
POSTED_LOCK = threading.Lock()
EVENTS: list[str] = []


class CountingAgent(NodeAgent):
    """The package's NodeAgent; both ways of posting an answer (`post`, and `post_then_poll`,
    which also brings the next tasks) record what the hub said of it."""

    def post(self, answer: Answer) -> str:
        status = super().post(answer)
        self._record(answer, status)
        return status

    def post_then_poll(self, answer: Answer, wait: float) -> tuple[str, list[Task]]:
        status, tasks = super().post_then_poll(answer, wait)
        self._record(answer, status)
        return status, tasks

    def _record(self, answer: Answer, status: str) -> None:
        with POSTED_LOCK:
            POSTED.append({"node": self.name, "task_id": answer.task_id, "hub": status})


def build_agent(hub: str, store: Path, token: str, poll: float) -> NodeAgent:
    """What `ccdp node run --open` builds (`serving_agent`, as commands/node.py `run`), with
    the recording agent and no console."""

    def event(msg: str) -> None:
        if "unreachable" in msg or "failed" in msg or "refused" in msg:
            EVENTS.append(f"{store.stem}: {msg}")

    return serving_agent(
        store, hub, token, connect, open_=True, wait=poll, on_event=event, agent_class=CountingAgent
    )


def connect(agent: NodeAgent, tries: int = 30) -> str:
    """`hello` with the agent's back-off while the hub starts (as `ccdp node run` does)."""
    for _ in range(tries):
        try:
            return agent.hello()
        except HubUnavailable:
            time.sleep(agent.backoff.next())
    raise SystemExit(f"agent could not reach {agent.hub_url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hub", required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--poll", type=float, default=20.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agents = [
        build_agent(args.hub, Path(c["store"]), c["token"], args.poll)
        for c in json.loads(args.config.read_text())
    ]
    threads = [
        threading.Thread(target=a.run, args=(stop,), daemon=True, name=f"agent-{a.name}")
        for a in agents
    ]
    for t in threads:
        t.start()
    print(f"{len(agents)} agents serving {args.hub}", flush=True)
    stop.wait()
    with POSTED_LOCK:
        body = {
            "posted": list(POSTED),
            "events": EVENTS[-200:],
            "agents": {  # what each agent holds at the end, to tell a slow task from a lost one
                a.name: {"seen": list(a.stats.seen_tasks), "outbox": list(a.outbox)} for a in agents
            },
        }
    args.out.write_text(json.dumps(body))
    os._exit(0)  # the agents' threads may sit in a long-poll: nothing of theirs is left to save


if __name__ == "__main__":
    main()

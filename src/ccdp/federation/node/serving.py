"""The node agent `ccdp node run` serves with, built in one place: the CLI and the load harness
(benchmarks/load/agents.py) run the same wiring, so what the harness measures is what a node
runs.

The agent answers through a `LocalNode` made once the hub has said the node's name (`connect`:
the agent's `hello`, with the caller's back-off and messages); the policy's release mode is
re-read at every answer, so `ccdp node policy set release manual` applies to a running agent.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.catalogue import CatalogueWatch
from ccdp.federation.node.hubreports import HubReports
from ccdp.federation.node.local import LocalNode
from ccdp.federation.node.pending import PendingStore
from ccdp.federation.node.policy import load_policy


def serving_agent(
    store: Path,
    hub: str,
    token: str,
    connect: Callable[[NodeAgent], str],
    *,
    open_: bool = False,
    wait: float = 20.0,
    verify: bool | ssl.SSLContext = True,
    on_event: Callable[[str], None] | None = None,
    agent_class: type[NodeAgent] = NodeAgent,
) -> NodeAgent:
    """The agent, connected (its node's name learnt) and ready to `run`. `open_`: also answer
    tasks that name no project (a hub run with --open)."""
    holder: dict[str, LocalNode] = {}

    def manual_now() -> bool:  # re-read at every answer: a policy change needs no restart
        return load_policy(store).release == "manual"

    agent = agent_class(
        hub,
        token,
        lambda task: holder["node"].answer(task),
        pending=PendingStore(store),
        manual_release=manual_now,
        # answers the rule says must be reviewed (policy exact_release) wait for the custodian
        review=lambda task: holder["node"].review(task),
        verify=verify,
        wait=wait,
        on_event=on_event,
        audit_head=AuditLog.for_store(store).head,
        # disclosure alerts for the board (each once) and the studies the custodian accepted
        reports=HubReports(store),
    )
    name = connect(agent)
    holder["node"] = LocalNode(store, name=name, from_hub=not open_)
    agent.catalogue = CatalogueWatch(
        lambda: holder["node"], manual_now, on_event=on_event or _quiet, hub_url=hub
    )
    return agent


def _quiet(_message: str) -> None:
    """No one to tell (the harness's agents)."""

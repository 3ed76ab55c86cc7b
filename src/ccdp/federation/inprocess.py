"""In-process transport: every store is a LocalNode in this process; messages still go through
JSON so that the in-process run exercises exactly what the network carries."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from ccdp.errors import SpecError
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Answer, Task


class InProcessTransport:
    """A Transport over LocalNodes (built from store paths, or given ready-made)."""

    def __init__(
        self, stores: list[Path | str | LocalNode], registered: Collection[str] = ()
    ) -> None:
        """`registered`: hashes of the studies a local run registers (`ccdp run --project`),
        given to the nodes built here from store paths."""
        nodes = [
            s if isinstance(s, LocalNode) else LocalNode(s, registered=registered) for s in stores
        ]
        self._nodes: dict[str, LocalNode] = {}
        for node in nodes:
            if node.name in self._nodes:
                raise SpecError(
                    f"two stores are both node {node.name!r}; name one in its policy (name: ...)"
                )
            self._nodes[node.name] = node

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def node(self, name: str) -> LocalNode:
        return self._nodes[name]

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        wire = task.model_dump_json()
        out: dict[str, Answer] = {}
        for name in nodes:
            node = self._nodes.get(name)
            if node is None:
                out[name] = Answer(
                    task_id=task.task_id, node=name, status="failed", reason="unknown node"
                )
                continue
            answer = node.answer(Task.model_validate_json(wire))
            out[name] = Answer.model_validate_json(answer.model_dump_json())
        return out

"""Answers waiting for the operator (node policy `release: manual`, or `exact_release` for a
study that is not registered), kept beside the store.

Each held answer is one JSON file in `<store stem>.pending/`, written atomically. The operator
lists them (`ccdp node pending`), releases or refuses them; the running agent posts what was
decided and marks it sent. Nothing is deleted: the folder is also the node's record of decisions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from ccdp.errors import CcdpError
from ccdp.wire.protocol import PROTOCOL_VERSION, Answer, Task
from ccdp.wire.summary import CountsPart, EventTimesPart, Summary

State = Literal["held", "released", "refused", "sent"]


class PendingError(CcdpError):
    """No such pending answer, an ambiguous id, or a decision on one already decided."""


class Pending(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    answer: Answer
    state: State = "held"
    held_at: datetime
    decided_at: datetime | None = None
    sent_at: datetime | None = None
    held_for: str | None = None  # why it waits (None: `release: manual`, every answer waits)

    @model_validator(mode="before")
    @classmethod
    def _stored_by_an_older_release(cls, data: Any) -> Any:
        """Held answers are the node's record of decisions: one written under protocol 3 (no
        title or requester in its task) still reads, with those fields unknown."""
        if isinstance(data, dict):
            for key in ("task", "answer"):
                msg = data.get(key)
                if isinstance(msg, dict) and msg.get("protocol_version") == 3:
                    data = {**data, key: {**msg, "protocol_version": PROTOCOL_VERSION}}
        return data


def pending_dir(store: Path) -> Path:
    return store.with_name(store.stem + ".pending")


class PendingStore:
    """The folder of held answers of one node store."""

    def __init__(self, store: Path) -> None:
        self.dir = pending_dir(store)

    def _path(self, task_id: str) -> Path:
        return self.dir / f"{task_id}.json"

    def _write(self, item: Pending) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(item.task.task_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(item.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)

    def hold(self, task: Task, answer: Answer, why: str | None = None) -> Pending:
        """Hold `answer` for the custodian. A task held already keeps its first record: the
        airlock holds a reviewed task's real answer with its reason before the agent's own
        hold of the same task (release: manual) would write the placeholder it was given."""
        if self.known(task.task_id):
            return Pending.model_validate_json(self._path(task.task_id).read_text("utf-8"))
        item = Pending(task=task, answer=answer, held_at=datetime.now(UTC), held_for=why)
        self._write(item)
        return item

    def all(self) -> list[Pending]:
        if not self.dir.is_dir():
            return []
        items = [
            Pending.model_validate_json(p.read_text(encoding="utf-8"))
            for p in sorted(self.dir.glob("*.json"))
        ]
        return sorted(items, key=lambda i: i.held_at)

    def known(self, task_id: str) -> bool:
        return self._path(task_id).exists()

    def find(self, ident: str) -> Pending:
        """By task id or a unique prefix of it."""
        matches = [i for i in self.all() if i.task.task_id.startswith(ident)]
        if not matches:
            raise PendingError(f"no pending answer {ident!r} in {self.dir}")
        if len(matches) > 1:
            raise PendingError(f"{ident!r} matches {len(matches)} pending answers; give more of it")
        return matches[0]

    def _decide(self, ident: str, state: State, reason: str | None = None) -> Pending:
        item = self.find(ident)
        if item.state != "held":
            raise PendingError(f"answer {item.task.task_id} is already {item.state}")
        item.state = state
        item.decided_at = datetime.now(UTC)
        if state == "refused":
            item.answer = Answer(
                task_id=item.task.task_id,
                node=item.answer.node,
                status="refused",
                reason=reason or "refused by the node operator",
            )
        self._write(item)
        return item

    def release(self, ident: str) -> Pending:
        return self._decide(ident, "released")

    def refuse(self, ident: str, reason: str) -> Pending:
        return self._decide(ident, "refused", reason)

    def to_send(self) -> list[Pending]:
        return [i for i in self.all() if i.state in ("released", "refused")]

    def mark_sent(self, item: Pending) -> None:
        item.state = "sent"
        item.sent_at = datetime.now(UTC)
        self._write(item)


def synopsis(summary: dict[str, Any] | None) -> str:
    """What each part of a held answer holds, in a line an operator can scan."""
    if not summary:
        return ""
    lines = []
    for name, part in Summary.from_dict(summary).parts.items():
        if isinstance(part, CountsPart):
            lines.append(f"{name}: {len(part.cells)} count cell(s) by {', '.join(part.dims)}")
        elif isinstance(part, EventTimesPart):
            sizes = ", ".join(f"{g}={n}" for g, n in part.group_sizes.items())
            lines.append(
                f"{name}: event-time table, {len(part)} row(s) per {part.time_unit}, "
                f"columns {', '.join(part.columns)}; group sizes {sizes}"
            )
        else:
            lines.append(
                f"{name}: model sums over {part.n} record(s), {part.n_params} parameter(s)"
            )
    return "\n".join(lines)


def readable(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The whole summary with packed arrays spelled out as numbers: what would leave, in full."""
    if not summary:
        return {}
    parsed = Summary.from_dict(summary)
    out = parsed.to_dict()
    for name, part in parsed.parts.items():
        if isinstance(part, EventTimesPart):
            out[name]["columns"] = {k: v.tolist() for k, v in part.columns.items()}
    return out


def decision_facts(item: Pending) -> dict[str, Any]:
    """What the custodian needs to decide on a held answer, besides what it holds: which study
    (title), who asked, which cohort, and the analysis with its parameters."""
    task = item.task
    return {
        "title": task.title or "(not sent by the hub)",
        "requester": task.requester or "(not sent by the hub)",
        "cohort": task.cohort or "all patients of the node",
        "analysis": task.analysis,
        "params": task.params,
        "held_for": item.held_for or "release: manual (every answer waits)",
    }


def describe(item: Pending) -> dict[str, Any]:
    """One line's worth for `ccdp node pending`."""
    summary = synopsis(item.answer.summary) or (item.answer.reason or "")
    return {
        "id": item.task.task_id,
        "study": item.task.study_id,
        "analysis": item.task.analysis,
        "round": item.task.round,
        "state": item.state,
        "held_at": item.held_at.isoformat(timespec="seconds"),
        "status": item.answer.status,
        "summary": summary,
        "held_for": item.held_for or "release: manual",
    }


class Answering(Protocol):
    """What the airlock needs of a node (federation/node/local.py: LocalNode)."""

    def review(self, task: Task) -> str | None: ...

    def answer(self, task: Task) -> Answer: ...


class Airlock:
    """A hub's tasks answered through the node, with every answer its rule says must be
    reviewed (`exact_release`) held for the custodian, whatever it says: a refusal after the
    data was read depends on the data too, so nothing of a held task reaches the hub before the
    custodian decides. The node agent takes `answer` as its answerer and `hold_now` as its
    `manual_release`: asked right after each answer, it says whether that answer is held."""

    def __init__(
        self,
        node: Callable[[], Answering],
        pending: PendingStore,
        manual: Callable[[], bool] = lambda: False,
    ) -> None:
        self._node, self.pending, self._manual = node, pending, manual
        self._held: str | None = None

    def answer(self, task: Task) -> Answer:
        node = self._node()
        self._held = None
        why = node.review(task)  # from the task and the custodian's record, before any data
        answer = node.answer(task)
        if why is None:
            return answer
        self.pending.hold(task, answer, why)
        self._held = task.task_id
        # what the agent is handed: never posted (the agent holds it, and the hold above stays)
        return Answer(task_id=task.task_id, node=answer.node, status="answered", reason=why)

    def hold_now(self) -> bool:
        """Is the answer just given held (release: manual, or held for review)?"""
        return self._held is not None or self._manual()

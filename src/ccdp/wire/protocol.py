"""Versioned protocol messages exchanged between the coordinator (hub) and nodes.

The same messages travel in-process (`ccdp run`), over HTTP (hub and node agents) and as files
(offline sites), so every transport is tested by the same node and coordinator code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ccdp.wire.data_use import DataUse

# 2: event-time tables travel as columns, with packed float64 blocks (version 1 sent rows).
# 3: an answer carries the head of the node's audit log (`audit_head`), so the hub holds it.
# 4: a task names its study's title and requester, for the custodian deciding a held answer.
PROTOCOL_VERSION = 4

# A hub's node door may do more than this version's routes; `GET /api/node/me` lists what
# (`features`), and a node agent uses only what its hub lists, so either side may be older.
# "answer-then-tasks": `POST /api/node/answers?wait=S` records the answer, then waits up to S
# seconds for the node's next tasks and returns them with the receipt (one request per round).
ANSWER_THEN_TASKS = "answer-then-tasks"


def _same_version(v: Any) -> int:
    """Both sides must speak this version; say which side to update rather than fail later."""
    if v != PROTOCOL_VERSION:
        raise ValueError(
            f"protocol version {v!r} is not spoken here (this side speaks {PROTOCOL_VERSION}); "
            "run the same ccdp release on the hub and the nodes"
        )
    return PROTOCOL_VERSION


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the one clock of every message, record and audit entry."""
    return datetime.now(UTC)


# What reads the time where time decides something (a round's deadline, a session's expiry, a
# project's last day): `utcnow` in production; a test hands in a clock it moves itself, so an
# expiry is seen to pass when the clock passes it, not when a real sleep happens to be long enough.
Clock = Callable[[], datetime]


class Task(BaseModel):
    """One round of one study, sent to a node."""

    model_config = ConfigDict(extra="forbid")

    protocol_version: int = PROTOCOL_VERSION
    task_id: str
    study_id: str
    round: int = Field(ge=0)
    analysis: str
    params: dict[str, Any] = Field(default_factory=dict)
    cohort: dict[str, Any] | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    title: str | None = None
    requester: str | None = None  # the hub user who submitted the study
    project: str | None = None  # the project the study belongs to (governance)
    data_use: DataUse | None = None  # the project's declared use: the node filters by consent

    _version = field_validator("protocol_version")(_same_version)


class AuditHead(BaseModel):
    """The last record of a node's audit log: its seq and HMAC. The hub keeps the highest one it
    was sent, so a node whose log is later cut, edited or rolled back no longer matches it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0, strict=True)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Answer(BaseModel):
    """A node's answer to a Task: a disclosure-checked summary, or a refusal or failure with why."""

    model_config = ConfigDict(extra="forbid")

    protocol_version: int = PROTOCOL_VERSION
    task_id: str
    node: str
    status: Literal["answered", "refused", "failed"]
    reason: str | None = None
    summary: dict[str, Any] | None = None
    sent_at: datetime = Field(default_factory=utcnow)
    audit_head: AuditHead | None = None

    _version = field_validator("protocol_version")(_same_version)


class HeartbeatBody(BaseModel):
    """What a node agent's heartbeat carries: its audit head (an empty body is accepted too)."""

    model_config = ConfigDict(extra="forbid")

    audit_head: AuditHead | None = None


class HeadAtHub(BaseModel):
    """What the hub holds of a node's audit log: the highest head it was sent, when, and any
    alert (a head that went back, or a second hash for one seq)."""

    model_config = ConfigDict(extra="forbid")

    head: AuditHead | None = None
    received_at: datetime | None = None
    alert: str | None = None


class Transport(Protocol):
    """Delivers a task to nodes and collects their answers (in-process, HTTP via the hub, files)."""

    def nodes(self) -> list[str]:
        """Names of the nodes this transport reaches."""
        ...

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        """Send `task` to `nodes`; return each node's answer (missing or timed-out nodes get a
        `failed` answer with the reason)."""
        ...

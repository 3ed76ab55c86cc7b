"""The hub's context: what its core (service.py) and its features (projects, trials, referrals,
catalogues, the audit log) share, so that neither imports the other.

Like Datasette's small core, the core never names a feature: a feature is handed this context
(sessions, the audit append, the waker) and gives back what the core asks of it through a
contract declared here (`Admissions`: which nodes a study may ask) or a hook (`node_details`).
The errors live here too, so a feature raises the same NotFound the HTTP layer maps to 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, FromClause, Row
from sqlalchemy.orm import Session, sessionmaker

from ccdp.errors import CcdpError
from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.auth import TokenKind
from ccdp.federation.hub.wakeup import Waker as Waker  # re-exported: the hub's parts import it here
from ccdp.federation.hub.wakeup import waker_for
from ccdp.wire.data_use import DataUse
from ccdp.wire.protocol import Clock, utcnow


class HubError(CcdpError):
    """A hub operation was refused (unknown name, duplicate, bad state)."""


class NotFound(HubError):
    """The thing asked for does not exist, or the caller may not know it exists."""


class Conflict(HubError):
    """The request contradicts what the hub already holds (e.g. a second, different answer)."""


class Forbidden(HubError):
    """The caller may not do this (e.g. publish another node's catalogue)."""


class StudyRefused(HubError):
    """A study is outside its project (or has none on a closed hub): no node is asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a node or a user, with their id, name and (users) role."""

    kind: TokenKind
    id: int
    name: str
    role: str | None = None


@dataclass(frozen=True)
class Admission:
    """The nodes a study may ask, the named nodes it may not ask with their status, and the
    spec as it runs when admission completed it (the project's scope as the default cohort;
    None: as submitted)."""

    project_id: str | None
    asked: list[str]
    excluded: dict[str, dict[str, str]]
    spec: dict[str, Any] | None = None


class Admissions(Protocol):
    """The admission contract: what the projects feature gives the core to admit a study and to
    label its tasks (the core stores and drives studies; whether one may run is not its rule)."""

    def admit(
        self,
        s: Session,
        owner: Principal | None,
        spec: dict[str, Any],
        analysis: str,
        chosen: list[str],
        open_hub: bool,
    ) -> Admission: ...

    def governance_of(self, project_id: str | None) -> tuple[str | None, DataUse | None]: ...


@dataclass(frozen=True)
class NodeDetail:
    """A node-list hook: what a feature shows of each node, read in the list's own statement
    (one round trip for the whole list). `source` has a `node_id` column and at most one row
    per node; it is outer-joined on it, `columns` (labelled, of `source`) are read, and
    `value` makes the node's entry of them (all None for a node without a row)."""

    source: FromClause
    columns: tuple[ColumnElement[Any], ...]
    value: Callable[[Row[Any]], Any]


@dataclass
class HubContext:
    """The sessions, the waker, the clock and the audit append every part of the hub works
    through.

    `clock` is read wherever time decides something (a round's deadline, a late answer, a
    project's expiry day), so a test moves it instead of sleeping. `node_details` is the one
    hook of the node list: a feature adds a key (the catalogues feature adds `catalogue`) and
    the core shows it per node without knowing the feature.
    """

    sessions: sessionmaker[Session]
    waker: Waker = field(default_factory=lambda: Waker(auto=True))
    clock: Clock = utcnow
    node_details: dict[str, NodeDetail] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.waker.auto:  # N workers on one PostgreSQL database wake each other
            self.waker = waker_for(self.sessions)

    @staticmethod
    def audit(s: Session, actor: str, action: str, **detail: Any) -> None:
        """Chain a record to the hub's audit log in the caller's transaction (never a token or
        a patient-level value in `detail`: see audit.py)."""
        hub_audit.append(s, actor, action, detail)

"""Run studies at the hub: one thread per study drives the analysis through `HubTransport`.

`HubTransport.ask` writes one task per node for the round, waits until every node has answered or
the study's timeout passes, and returns each node's answer (a timed-out node gets a `failed` answer
saying so). Rounds live in the database, so after a restart the runner replays a study from the
start: rounds already answered are read back instead of asked again, and the analysis (which is
deterministic given its answers) arrives where it stopped.

With N hub workers on one database, a study is driven by the one worker holding its lease
(leases.py): `StudyRunner.start` claims before starting a thread, and a keeper thread renews
this worker's leases, stops a study whose lease another worker took, and claims the studies
whose lease ran out (a worker killed mid-round), which then replay as after a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ccdp.errors import CcdpError
from ccdp.federation.hub import leases
from ccdp.federation.hub.db import unavailable
from ccdp.federation.hub.service import HubCore
from ccdp.wire.protocol import Answer, Task, Transport

log = logging.getLogger("ccdp.hub")


class HubStopping(CcdpError):
    """The hub is shutting down: a study's thread unwinds and resumes at the next start."""


@dataclass(frozen=True)
class PreparedStudy:
    """The hub's view of a validated study spec."""

    spec: dict[str, Any]
    analysis: str
    title: str
    nodes: list[str] | None
    min_nodes: int | None
    timeout: float


class StudyExecutor(Protocol):
    """Validates study specs and runs them over a transport (the analyses stage's `run_study`)."""

    def prepare(self, spec: dict[str, Any]) -> PreparedStudy: ...

    def run(self, spec: dict[str, Any], transport: Transport) -> dict[str, Any]: ...


class HubTransport:
    """protocol.Transport over the hub's database: tasks out to node agents, answers back."""

    def __init__(
        self,
        hub: HubCore,
        study_id: str,
        nodes: list[str],
        timeout: float,
        stop: threading.Event,
        poll: float = 0.5,
        project: str | None = None,
    ) -> None:
        self.hub = hub
        self.project = project
        self.study_id = study_id
        self._nodes = list(nodes)
        self.timeout = timeout
        self._stop = stop
        self._poll = poll
        self._round = 0
        self._requester: str | None = None  # a study's submitter never changes: read once

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        """One round: write the tasks (or find them, on resume), wait, collect."""
        round_no = self._round
        self._round += 1
        project, data_use = self.hub.governance_of(self.project)  # each round: may be revoked
        if self._requester is None:
            self._requester = self.hub.study_requester(self.study_id)
        sent = task.model_copy(
            update={
                "study_id": self.study_id,
                "requester": self._requester,
                "project": project,  # the node checks the task against what it accepted
                "data_use": data_use,
            }
        )
        round_id = self.hub.open_round(self.study_id, round_no, sent, nodes, self.timeout)
        self._wait(round_id)
        answers = self.hub.close_round(round_id)
        return {n: a.model_copy(update={"task_id": task.task_id}) for n, a in answers.items()}

    def _wait(self, round_id: int) -> None:
        """Until all answered or the deadline. An answer this hub records wakes the wait at
        once (`record_answer` wakes `round:{id}`), so no poll lies on a round's path; `poll`
        only bounds each wait so that answers another process wrote to the same database,
        which wake nothing here (`ccdp hub import`), are seen too. The thread watches its own
        round and study only: an answer to another study does not wake it."""
        keys = (f"round:{round_id}", f"study:{self.study_id}")
        with self.hub.waker.watch(*keys) as watch:
            while True:
                if self._stop.is_set():
                    raise HubStopping(f"hub stopping during study {self.study_id}")
                seen = watch.seen()
                complete, deadline = self.hub.round_state(round_id)
                left = (deadline - self.hub.context.clock()).total_seconds()
                if complete or left <= 0:
                    return
                watch.wait(seen, min(self._poll, left))


class StudyRunner:
    """Starts, resumes and stops the per-study threads; claims and renews their leases."""

    def __init__(
        self, hub: HubCore, executor: StudyExecutor, poll: float = 0.5, lease: float = leases.LEASE
    ) -> None:
        self.hub = hub
        self.executor = executor
        self.poll = poll
        self.lease = lease
        self.owner = leases.worker_id()
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._stops: dict[str, threading.Event] = {}
        self._keeper: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, study_id: str) -> None:
        """Drive a study here, if this worker can claim it (else another worker drives it; if
        the database is away now, a keeper claims it later: the study is stored already)."""
        try:
            if self._alive(study_id) or not leases.claim(
                self.hub.sessions, study_id, self.owner, self.lease
            ):
                return
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("study %s not claimed yet: database unavailable (%s)", study_id, exc)
            return
        self._spawn(study_id)

    def _alive(self, study_id: str) -> bool:
        with self._lock:
            t = self._threads.get(study_id)
            return t is not None and t.is_alive()

    def _spawn(self, study_id: str) -> None:
        with self._lock:
            if study_id in self._threads and self._threads[study_id].is_alive():
                return
            self._stops[study_id] = threading.Event()
            t = threading.Thread(
                target=self._run, args=(study_id,), name=f"study-{study_id[:8]}", daemon=True
            )
            self._threads[study_id] = t
            t.start()

    def resume_all(self) -> list[str]:
        """Claim and restart every unfinished study no live worker holds; then keep claiming
        (studies whose worker died) and renewing, every third of a lease."""
        ids = self.tend()
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="study-leases", daemon=True)
            self._keeper.start()
        return ids

    def tend(self) -> list[str]:
        """One turn of the keeper: renew, stop the studies taken over, start the free ones."""
        with self._lock:
            live = [k for k, t in self._threads.items() if t.is_alive()]
        held = leases.renew(self.hub.sessions, self.owner, live, self.lease)
        for study_id in set(live) - held:
            log.warning("study %s: lease taken over by another worker; stopping here", study_id)
            self._stops[study_id].set()
            self.hub.waker.wake_local([f"study:{study_id}"])  # its thread stops now, not at poll
        if self._stop.is_set():
            return []
        claimed = leases.claim_free(self.hub.sessions, self.owner, self.lease, skip=live)
        for study_id in claimed:
            self._spawn(study_id)
        return claimed

    def _keep(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.tend()
            except Exception as exc:  # the keeper outlives a database outage
                if not unavailable(exc):
                    log.exception("study lease keeper")
                else:
                    log.warning("study leases not renewed: database unavailable (%s)", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Pause every study here and give up their leases: another worker (or this one,
        restarted) takes them over at once."""
        self._stop.set()
        for ev in list(self._stops.values()):
            ev.set()
        self.hub.waker.wake()
        for t in list(self._threads.values()):
            t.join(timeout)
        if self._keeper is not None:
            self._keeper.join(timeout)
        try:
            leases.release(self.hub.sessions, self.owner)
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("study leases not released (database unavailable): they run out")

    def _run(self, study_id: str) -> None:
        """Drive the study; if the database goes away, pause (the keeper re-claims it)."""
        try:
            self._drive(study_id, self._stops[study_id])
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("study %s paused: database unavailable (%s)", study_id, exc)
            return
        try:
            leases.release(self.hub.sessions, self.owner, study_id)
        except Exception as exc:
            if not unavailable(exc):
                raise

    def _drive(self, study_id: str, stop: threading.Event) -> None:
        row = self.hub.study_row(study_id)
        if not self.hub.set_study_status(study_id, "running", owner=self.owner):
            log.info(
                "study %s: finished, or its lease is another worker's: not driven here", study_id
            )
            return
        transport = HubTransport(
            self.hub, study_id, row.nodes, row.timeout, stop, self.poll, row.project_id
        )
        # a study that names its nodes runs over those admitted (a declining node is reported
        # beside them, below), not over a list naming nodes this transport does not ask
        spec = {**row.spec, "nodes": row.nodes} if row.spec.get("nodes") else row.spec
        try:
            result = self.executor.run(spec, transport)
        except HubStopping:
            log.info("study %s paused for shutdown; it resumes at the next start", study_id)
            return
        except CcdpError as exc:
            self.hub.set_study_status(study_id, "failed", error=str(exc), owner=self.owner)
            return
        except Exception as exc:  # an analysis bug must fail the study, not kill the hub
            if unavailable(exc):
                raise
            log.exception("study %s failed", study_id)
            error = f"{type(exc).__name__}: {exc}"
            self.hub.set_study_status(study_id, "failed", error=error, owner=self.owner)
            return
        # the result names the study by the hub's id, the one `ccdp submit` printed
        # nodes the project kept out (declined, not accepted) are reported beside those asked
        nodes = {**(row.excluded or {}), **result.get("nodes", {})}
        done = {**result, "study_id": study_id, "nodes": nodes}
        if not self.hub.set_study_status(study_id, "done", result=done, owner=self.owner):
            log.warning("study %s: lease lost before its result; its holder writes it", study_id)

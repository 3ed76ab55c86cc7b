"""The node agent: connects outward to the hub, long-polls for tasks, answers them, posts results.

A site opens no port: the agent only makes HTTPS requests to the hub. After network loss or a hub
restart it retries with exponential back-off (with jitter) and asks for undelivered-but-unanswered
tasks again, so a task caught mid-way is not lost. Answers that could not be posted wait in an
outbox and are posted again; the hub treats a repeated answer as the same answer.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from ccdp.errors import CcdpError
from ccdp.federation.node.pending import PendingStore
from ccdp.wire.protocol import ANSWER_THEN_TASKS, Answer, AuditHead, HeadAtHub, Task

if TYPE_CHECKING:
    from ccdp.federation.node.catalogue import CatalogueWatch
    from ccdp.federation.node.hubreports import HubReports

log = logging.getLogger("ccdp.node")

Answerer = Callable[[Task], Answer]
HeadSource = Callable[[], AuditHead | None]


class AgentError(CcdpError):
    """The hub refused this node (token revoked or unknown) or answered nonsense."""


class RequestRefused(AgentError):
    """The hub refused one request (4xx but 401), e.g. an answer to a task it no longer has."""


class HubUnavailable(Exception):
    """The hub could not be reached or answered 5xx: retry later."""


@dataclass
class Backoff:
    """Exponential back-off with full jitter, capped; reset after a success."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class AgentStats:
    answered: int = 0
    held: int = 0
    reconnects: int = 0
    seen_tasks: list[str] = field(default_factory=list)


class NodeAgent:
    """One node's connection to its hub."""

    def __init__(
        self,
        hub_url: str,
        token: str,
        answerer: Answerer,
        *,
        pending: PendingStore | None = None,
        manual_release: bool | Callable[[], bool] = False,
        review: Callable[[Task], str | None] | None = None,
        verify: bool | ssl.SSLContext = True,
        wait: float = 20.0,
        heartbeat: float = 10.0,
        backoff: Backoff | None = None,
        on_event: Callable[[str], None] | None = None,
        audit_head: HeadSource | None = None,
        catalogue: CatalogueWatch | None = None,
        reports: HubReports | None = None,
    ) -> None:
        """`audit_head` gives the node's current audit head, sent with every heartbeat;
        `manual_release` may be a function, asked at every answer, so that the operator's policy
        change (`ccdp node policy set release manual`) applies to a running agent; `review`
        says, from the task alone and before it is answered, why its answer must wait for the
        custodian whatever it says (policy `exact_release`: LocalNode.review); `catalogue`
        says when the node's catalogue is due (at start, after each ingest) and builds it;
        `reports` gives the node's disclosure alerts not yet sent and its custodian's accepted
        studies, posted from the poll loop and the heartbeat."""
        if (manual_release is True or review is not None) and pending is None:
            raise AgentError("manual release needs a pending store beside the node store")
        self.hub_url = hub_url.rstrip("/")
        self.answerer = answerer
        self.pending = pending
        self.manual = manual_release
        self.review = review
        self.wait = wait
        self.heartbeat_every = heartbeat
        self.backoff = backoff or Backoff()
        self.name: str | None = None
        self.answer_then_tasks = False  # set by hello(): can the hub's answer route poll too?
        self.stats = AgentStats()
        self.outbox: dict[str, Answer] = {}
        self._audit_head = audit_head
        self.catalogue = catalogue
        self._catalogue_error: str | None = None
        self.reports = reports
        self._reports_error: str | None = None
        self._reporting = threading.Lock()  # the poll loop and the heartbeat both report
        # heartbeats and posts go one at a time: a heartbeat that read an older head must not
        # reach the hub after an answer carrying a newer one (the hub would see the head go back)
        self._send = threading.Lock()
        self._on_event = on_event or (lambda msg: log.info("%s", msg))
        self._client = httpx.Client(
            base_url=self.hub_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=httpx.Timeout(10.0, read=wait + 15.0),
        )

    # ---- HTTP ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: object) -> httpx.Response:
        try:
            resp = self._client.request(method, path, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise HubUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 401:
            raise AgentError(f"the hub refused this node's token ({resp.json().get('detail')})")
        if resp.status_code >= 500:
            raise HubUnavailable(f"hub answered {resp.status_code}")
        if resp.status_code >= 400:
            raise RequestRefused(f"hub refused {method} {path}: {resp.status_code} {resp.text}")
        return resp

    def hello(self) -> str:
        """Who this node is at the hub, and whether the hub's answer route can also bring the
        next tasks (an older hub lists no such feature: its two routes are used)."""
        body = self._request("GET", "/api/node/me").json()
        self.name = body["name"]
        self.answer_then_tasks = ANSWER_THEN_TASKS in body.get("features", [])
        return self.name

    def poll(self, redeliver: bool = False, wait: float | None = None) -> list[Task]:
        params = {"wait": self.wait if wait is None else wait, "redeliver": redeliver}
        body = self._request("GET", "/api/node/tasks", params=params).json()
        return [Task.model_validate(t) for t in body["tasks"]]

    def post(self, answer: Answer) -> str:
        with self._send:
            body = answer.model_dump(mode="json")
            resp = self._request("POST", "/api/node/answers", json=body)
        return resp.json()["status"]

    def post_then_poll(self, answer: Answer, wait: float) -> tuple[str, list[Task]]:
        """Post an answer and, in the same request, wait up to `wait` seconds for the next
        tasks (one request per round instead of two). The send lock is only passed through,
        not held for the wait: a heartbeat in flight (it may carry an older head) has reached
        the hub before this answer leaves, and one started later reads a head at least as new
        as this answer's, which was written before this call."""
        with self._send:
            body = answer.model_dump(mode="json")
        params = {"wait": wait, "redeliver": False}
        got = self._request("POST", "/api/node/answers", params=params, json=body).json()
        return got["status"], [Task.model_validate(t) for t in got.get("tasks", [])]

    def heartbeat(self) -> None:
        """Tell the hub the node is alive, with its current audit head (read just before)."""
        with self._send:
            head = self._current_head()
            body = {"audit_head": head.model_dump()} if head is not None else None
            self._request("POST", "/api/node/heartbeat", json=body)

    def _current_head(self) -> AuditHead | None:
        if self._audit_head is None:
            return None
        try:
            return self._audit_head()
        except CcdpError as exc:  # a damaged head is the operator's to see, not a dead agent
            self._on_event(f"audit head not sent: {exc}")
            return None

    # ---- work ----------------------------------------------------------------------------
    def handle(self, task: Task) -> None:
        """Answer one task: straight to the outbox, or held for the operator (manual release)."""
        tid = task.task_id
        if tid in self.outbox or (self.pending is not None and self.pending.known(tid)):
            return
        self.stats.seen_tasks.append(tid)
        assert self.name is not None
        held_for = self.review(task) if self.review is not None else None
        try:
            answer = self.answerer(task)
        except CcdpError as exc:
            answer = Answer(task_id=tid, node=self.name, status="failed", reason=str(exc))
        except Exception as exc:  # the node must report a failure, not die on one task
            log.exception("task %s failed", tid)
            answer = Answer(
                task_id=tid, node=self.name, status="failed", reason=f"{type(exc).__name__}: {exc}"
            )
        answer = answer.model_copy(update={"node": self.name, "task_id": tid})
        manual = self.manual() if callable(self.manual) else self.manual
        # a reviewed task's refusal waits too: after the data was read it depends on the data
        if held_for is not None or (manual and answer.status == "answered"):
            if self.pending is None:
                raise AgentError("manual release needs a pending store beside the node store")
            self.pending.hold(task, answer, held_for)
            self.stats.held += 1
            self._on_event(f"held answer to {task.analysis} round {task.round} ({tid[:8]})")
            return
        self.outbox[tid] = answer

    def flush(self, then_wait: float | None = None) -> list[Task] | None:
        """Post the outbox and every operator decision not yet sent. With `then_wait` (and a
        hub that can), the last answer's request also waits that long for the node's next
        tasks, returned; None when no request brought any (the caller then polls)."""
        answers = list(self.outbox.items())
        combine = then_wait is not None and self.answer_then_tasks and answers
        last = answers.pop() if combine else None  # none when the answer was held
        for tid, answer in answers:
            self._post_one(tid, answer)
        self._flush_decisions()
        if last is None:
            return None
        assert then_wait is not None
        return self._post_one(*last, then_wait=then_wait)

    def _post_one(
        self, tid: str, answer: Answer, then_wait: float | None = None
    ) -> list[Task] | None:
        """Post one answer of the outbox (then, with `then_wait`, wait for the next tasks);
        a refused answer is dropped, as the hub will not take it."""
        tasks = None
        try:
            if then_wait is None:
                status = self.post(answer)
            else:
                status, tasks = self.post_then_poll(answer, then_wait)
        except RequestRefused as exc:
            status = f"dropped ({exc})"
        del self.outbox[tid]
        self.stats.answered += 1
        self._on_event(f"posted {answer.status} for task {tid[:8]}: {status}")
        return tasks

    def _flush_decisions(self) -> None:
        """Post the operator's decisions (released or refused held answers) not yet sent."""
        if self.pending is not None:
            for item in self.pending.to_send():
                try:
                    status = self.post(item.answer)
                except RequestRefused as exc:
                    status = f"dropped ({exc})"
                self.pending.mark_sent(item)
                self._on_event(
                    f"posted operator's {item.state} for {item.task.task_id[:8]}: {status}"
                )

    def publish_catalogue(self) -> None:
        """Send the node's catalogue when it is due (at start, after a new ingest); a hub that
        cannot be reached raises HubUnavailable and the next cycle tries again."""
        watch = self.catalogue
        if watch is None:
            return
        try:
            if not watch.due():
                return
            prepared = watch.prepare()
        except Exception as exc:  # e.g. an ingest holds the store: tried again next cycle
            why = f"catalogue not published yet: {type(exc).__name__}: {exc}"
            if why != self._catalogue_error:  # said once, not at every poll
                self._catalogue_error = why
                self._on_event(why)
            return
        self._catalogue_error = None
        if prepared is None:
            return
        body, mark = prepared
        try:
            with self._send:
                self._request("PUT", "/api/node/catalogue", json=body)
            self._on_event(f"published the catalogue (last ingest {body.get('last_ingest')})")
        except RequestRefused as exc:
            self._on_event(f"the hub refused the catalogue: {exc}")
        watch.sent(mark)

    def send_reports(self) -> None:
        """Post the node's new disclosure alerts to the hub's board (each once: marked sent in
        the node's record, or refused for good by the hub) and, when the custodian's record
        changed, the registered studies accepted per project. A hub that cannot be reached
        raises HubUnavailable and the next cycle tries again."""
        reports = self.reports
        if reports is None or not self._reporting.acquire(blocking=False):
            return
        try:
            self._send_alerts(reports)
            got = reports.acceptances()
            if got is not None:
                body, mark = got
                try:
                    with self._send:
                        self._request(
                            "PUT", "/api/node/accepted-studies", json=body.model_dump(mode="json")
                        )
                    self._on_event(f"reported accepted studies of {len(body.projects)} project(s)")
                except RequestRefused as exc:
                    self._on_event(f"the hub refused the accepted studies: {exc}")
                reports.acceptances_sent(mark)
            self._reports_error = None
        except (CcdpError, OSError) as exc:  # an unreadable record is the operator's to see
            why = f"reports not sent: {type(exc).__name__}: {exc}"
            if why != self._reports_error:
                self._reports_error = why
                self._on_event(why)
        finally:
            self._reporting.release()

    def _send_alerts(self, reports: HubReports) -> None:
        for alert in reports.alerts():
            try:
                with self._send:
                    resp = self._request(
                        "POST", "/api/node/alerts", json=alert.model_dump(mode="json")
                    )
                status = f"received {resp.json().get('received_at', '')}".strip()
            except RequestRefused as exc:  # e.g. a project this hub does not know: said once
                status = f"refused: {exc}"
            reports.alert_sent(alert, status)
            self._on_event(f"disclosure alert on project {alert.project} to the board: {status}")

    def _poll_wait(self) -> float:
        """Held answers need a short poll so that a release is posted promptly."""
        if self.pending is not None and any(i.state == "held" for i in self.pending.all()):
            return min(self.wait, 1.0)
        return self.wait

    def chores(self) -> None:
        """What the agent sends besides answers: its catalogue when due, its reports."""
        self.publish_catalogue()
        self.send_reports()

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set; raise AgentError if the hub refuses the token.

        After answering, the agent asks for its next task at once: the next round of a study
        opens when the last node has answered, so a node still busy with chores then would hold
        the whole round. The chores wait until a poll brings nothing (the node is idle), or
        for at most one heartbeat interval while tasks keep coming."""
        stop = stop or threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), daemon=True, name="heartbeat")
        beat.start()
        redeliver, busy, chores_at = True, False, 0.0
        brought: list[Task] | None = None  # tasks the last answer's own request brought
        while not stop.is_set():
            try:
                if self.name is None:
                    self._on_event(f"connected to {self.hub_url} as node {self.hello()}")
                self.flush()
                if brought:  # the last answer's request brought tasks: they come first
                    tasks, brought = brought, None
                else:
                    # an answer's request that waited in vain is a poll that brought nothing
                    busy, brought = busy and brought is None, None
                    if not busy or time.monotonic() - chores_at >= self.heartbeat_every:
                        self.chores()
                        chores_at = time.monotonic()
                    tasks = self.poll(redeliver=redeliver, wait=self._poll_wait())
                redeliver, busy = False, bool(tasks)
                self.backoff.reset()
                for i, task in enumerate(tasks):
                    self.handle(task)
                    # the last answer of the batch also asks for the next tasks, unless the
                    # chores are due (they run before the next poll, as they always did)
                    due = time.monotonic() - chores_at >= self.heartbeat_every
                    then = self._poll_wait() if i == len(tasks) - 1 and not due else None
                    brought = self.flush(then)
            except HubUnavailable as exc:
                delay = self.backoff.next()
                self.stats.reconnects += 1
                redeliver, busy, brought = True, False, None
                self._on_event(f"hub unreachable ({exc}); retrying in {delay:.1f} s")
                stop.wait(delay)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_every):
            try:
                self.heartbeat()
                self.send_reports()  # an alert found after a release need not wait for a poll
            except (HubUnavailable, AgentError):
                continue

    def close(self) -> None:
        self._client.close()


def hub_audit_head(hub_url: str, token: str, verify: bool | ssl.SSLContext = True) -> HeadAtHub:
    """What the hub holds of this node's audit head (`GET /api/node/audit-head`)."""
    try:
        resp = httpx.get(
            hub_url.rstrip("/") + "/api/node/audit-head",
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=15,
        )
    except httpx.TransportError as exc:
        raise AgentError(f"cannot reach the hub at {hub_url}: {exc}") from exc
    if resp.status_code >= 400:
        raise AgentError(
            f"the hub refused GET /api/node/audit-head: {resp.status_code} {resp.text}"
        )
    return HeadAtHub.model_validate(resp.json())

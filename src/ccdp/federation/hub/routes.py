"""The core's routes: health and who-am-I, the node's tasks and answers, the researcher's
studies, and the admin's members and imports. A node sees only its own tasks and no route ever
gives a node any answer or result. Every body is a Pydantic model that refuses unknown fields.

The features (catalogues, projects, trials, referrals, the audit log, the board's view) bring
their own routers; app.py puts them all on one app.
"""

import asyncio
import contextlib
from typing import Annotated, Any, Literal
from weakref import WeakKeyDictionary

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import Field

from ccdp import __version__
from ccdp.errors import CcdpError
from ccdp.federation import resultfile
from ccdp.federation.hub.context import Principal
from ccdp.federation.hub.doors import (
    AsAdmin,
    AsAnyone,
    AsNode,
    AsResearcher,
    AsUser,
    Strict,
    admit,
    bearer,
    bearer_token,
    known,
)
from ccdp.federation.hub.loopreads import Listing
from ccdp.federation.hub.runner import StudyExecutor, StudyRunner
from ccdp.federation.hub.service import STUDY_LIST, HubCore, Recorded, import_file
from ccdp.wire.protocol import ANSWER_THEN_TASKS, Answer, AuditHead, HeadAtHub, HeartbeatBody, Task

# what this hub's node door can do beyond the first protocol: a node agent reads it from
# `GET /api/node/me` and uses only what is listed (an older hub lists nothing)
NODE_FEATURES = [ANSWER_THEN_TASKS]


class NodeInfo(Strict):
    name: str
    country: str
    features: list[str] = Field(default_factory=list)


class Me(Strict):
    kind: Literal["node", "user"]
    name: str
    role: str | None = None


class TaskList(Strict):
    tasks: list[Task]


class Posted(Strict):
    status: Literal["accepted", "duplicate", "late"]
    task_id: str


class PostedThenTasks(Posted):
    """An answer's receipt and the node's next tasks, in one request (`?wait=`)."""

    tasks: list[Task]


class Heartbeat(Strict):
    node: str
    at: str
    audit_head: AuditHead | None = None


class SubmitStudy(Strict):
    spec: dict[str, Any]


class Submitted(Strict):
    id: str
    status: str


class NewNode(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    country: str = Field(min_length=2, max_length=2)
    public_key: str | None = None


class NewUser(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["researcher", "board", "admin", "statistician", "expert"] = "researcher"


class NewToken(Strict):
    name: str
    token: str


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def user_read(
    hub: HubCore,
    creds: HTTPAuthorizationCredentials | None,
    listing: Listing[Any],
) -> JSONResponse:
    """A user route's token check (on the loop), then its read: on the loop too where that
    never blocks it (SQLite, PostgreSQL: loopreads.py), else in one worker-thread hop (as
    `AsUser` then a plain def would take more). The list is sent as built (plain JSON values
    already, so FastAPI's validation of it would only cost time)."""
    who = admit(known(await hub.check_token(bearer_token(creds))), "user")
    if hub.loop_reads is not None:
        return JSONResponse(await hub.loop_reads.read(listing, who))
    listed = await to_thread.run_sync(hub.read_listed, listing, who, limiter=list_readers())
    return JSONResponse(listed)


LIST_READERS = 2  # threads reading lists at once (per event loop)
_list_readers: WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = WeakKeyDictionary()


def list_readers() -> CapacityLimiter:
    """The few threads the lists are read in. Under 50 clients, 40 threads building lists at
    once cost the node list 4.5 ms of CPU a request instead of 1.8 (GIL hand-offs between them
    and the event loop: benchmarks/load/bench_asgi.py); the loop's own thread limiter is per
    loop, and so is this one."""
    loop = asyncio.get_running_loop()
    limiter = _list_readers.get(loop)
    if limiter is None:
        limiter = _list_readers[loop] = CapacityLimiter(LIST_READERS)
    return limiter


def hub_router(api: APIRouter | None = None) -> APIRouter:
    """Health and who-am-I: the routes every token (or none) may call."""
    api = api if api is not None else APIRouter()

    @api.get("/api/health", tags=["hub"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @api.get("/api/me", tags=["hub"])
    async def me(who: AsAnyone) -> Me:
        """Who this token is: a node or a user, and a user's role (the dashboard's sign-in).
        No I/O of its own, so on the event loop (a plain def would cost a thread hop)."""
        return Me(kind=who.kind, name=who.name, role=who.role)

    return api


async def next_tasks(
    hub: HubCore, node: Principal, wait: float, redeliver: bool, woke: bool = False
) -> list[Task]:
    """This node's open tasks, waiting up to `wait` seconds for one to appear. `woke`: the
    node's wake-up has just fired, so a task is most likely there: the look goes straight to
    the delivering transaction, without the read that tells an idle look it can skip it."""
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    while True:
        woken = hub.waker.event(f"node:{node.id}")
        tasks = await run_in_threadpool(hub.pending_tasks, node.id, redeliver, not woke)
        left = until - loop.time()
        if tasks or left <= 0 or hub.waker.closing:
            return tasks
        woke = await _woken(woken, left)


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    """Whether `event` fired within `timeout` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout)
    except TimeoutError:
        return False
    return True


def node_router(hub: HubCore, api: APIRouter | None = None) -> APIRouter:
    """The node's door: its tasks (long-polled), its answers, its heartbeat and audit head."""
    api = api if api is not None else APIRouter()

    @api.get("/api/node/me", tags=["node"])
    def node_me(node: AsNode) -> NodeInfo:
        info = next(n for n in hub.nodes() if n["name"] == node.name)
        return NodeInfo(name=node.name, country=info["country"], features=NODE_FEATURES)

    @api.get("/api/node/tasks", tags=["node"])
    async def node_tasks(
        node: AsNode,
        wait: Annotated[float, Query(ge=0, le=60, description="long-poll seconds")] = 0,
        redeliver: Annotated[bool, Query(description="also tasks delivered, unanswered")] = False,
    ) -> TaskList:
        """This node's open tasks; waits up to `wait` seconds for one to appear."""
        return TaskList(tasks=await next_tasks(hub, node, wait, redeliver))

    @api.get("/api/node/tasks/{task_id}", tags=["node"])
    def node_task(task_id: str, node: AsNode) -> Task:
        return hub.task_for_node(task_id, node.id)

    @api.post("/api/node/answers", tags=["node"])
    async def node_answer(
        answer: Answer,
        node: AsNode,
        wait: Annotated[
            float | None,
            Query(ge=0, le=60, description="then long-poll this many seconds for next tasks"),
        ] = None,
        redeliver: Annotated[bool, Query(description="with wait: also tasks delivered")] = False,
    ) -> Posted | PostedThenTasks:
        """Post an answer; posting the same answer again is harmless (idempotent). With `wait`
        the same request then waits for the node's next tasks, as `GET /api/node/tasks` does:
        a node answering round after round makes one request per round instead of two. The
        answer is recorded (committed) before the wait; a refused answer ends the request."""
        if wait is None:
            rec = await run_in_threadpool(hub.record_answer, node.id, answer)
            return Posted(status=rec.status, task_id=rec.task_id)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        woken = hub.waker.event(f"node:{node.id}")  # before the first look: no wake is lost

        def record_then_look() -> tuple[Recorded, list[Task]]:
            """The answer and the first look for tasks in one worker-thread hop."""
            return hub.record_answer(node.id, answer), hub.pending_tasks(node.id, redeliver)

        rec, tasks = await run_in_threadpool(record_then_look)
        if not tasks and until > loop.time() and not hub.waker.closing:
            woke = await _woken(woken, until - loop.time())
            tasks = await next_tasks(hub, node, max(0.0, until - loop.time()), redeliver, woke)
        return PostedThenTasks(status=rec.status, task_id=rec.task_id, tasks=tasks)

    @api.post("/api/node/heartbeat", tags=["node"])
    def node_heartbeat(node: AsNode, body: HeartbeatBody | None = None) -> Heartbeat:
        """The node is alive; its audit head, if sent, is kept (never lowered: see alerts)."""
        held = None
        if body is not None and body.audit_head is not None:
            held = hub.record_audit_head(node.id, body.audit_head, "heartbeat").head
        info = next(n for n in hub.nodes() if n["name"] == node.name)
        return Heartbeat(node=node.name, at=info["last_seen"], audit_head=held)

    @api.get("/api/node/audit-head", tags=["node"])
    def node_audit_head(node: AsNode) -> HeadAtHub:
        """The highest audit head this node sent, and any alert about it."""
        return hub.audit_head(node.id)

    return api


def nodes_router(hub: HubCore, api: APIRouter | None = None) -> APIRouter:
    """The researcher's list of nodes."""
    api = api if api is not None else APIRouter()

    @api.get("/api/nodes", tags=["researcher"], response_model=list[dict[str, Any]])
    async def list_nodes(creds: Bearer) -> JSONResponse:
        """Registered nodes with their last-seen time (heartbeats and polls)."""
        return await user_read(hub, creds, hub.node_list)

    return api


def study_router(
    hub: HubCore, runner: StudyRunner, executor: StudyExecutor, api: APIRouter | None = None
) -> APIRouter:
    """The researcher's studies: submit (validated by `executor`, run by `runner`), list, read."""
    api = api if api is not None else APIRouter()

    @api.post("/api/studies", tags=["researcher"], status_code=201)
    def submit(body: SubmitStudy, user: AsResearcher) -> Submitted:
        try:
            prep = executor.prepare(body.spec)
            study_id = hub.create_study(
                prep.spec,
                analysis=prep.analysis,
                title=prep.title,
                nodes=prep.nodes,
                min_nodes=prep.min_nodes,
                timeout=prep.timeout,
                owner=user,
            )
        except CcdpError as exc:  # a refused submission is a request too: audited
            hub.record_refused(user, "submit-study", str(exc))
            raise
        runner.start(study_id)
        return Submitted(id=study_id, status="queued")

    @api.get("/api/studies", tags=["researcher"], response_model=list[dict[str, Any]])
    async def list_studies(creds: Bearer) -> JSONResponse:
        return await user_read(hub, creds, STUDY_LIST)

    @api.get("/api/studies/{study_id}", tags=["researcher"])
    async def get_study(
        study_id: str,
        user: AsUser,
        wait: Annotated[float, Query(ge=0, le=60, description="long-poll seconds")] = 0,
    ) -> dict[str, Any]:
        """A study with its result; waits up to `wait` seconds for it to finish."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            woken = hub.waker.event(f"study:{study_id}")
            study = await run_in_threadpool(hub.study, study_id, user)
            left = until - loop.time()
            if study["status"] in ("done", "failed") or left <= 0 or hub.waker.closing:
                await run_in_threadpool(hub.record_read, user, study)
                return study
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=left)

    return api


def admin_router(hub: HubCore, api: APIRouter | None = None) -> APIRouter:
    """The admin's members (nodes, users, revocations) and offline sites' result files."""
    api = api if api is not None else APIRouter()

    @api.post("/api/admin/nodes", tags=["admin"], status_code=201)
    def add_node(body: NewNode, admin: AsAdmin) -> NewToken:
        token = hub.add_node(body.name, body.country, body.public_key, by=admin.name)
        return NewToken(name=body.name, token=token)

    @api.post("/api/admin/users", tags=["admin"], status_code=201)
    def add_user(body: NewUser, admin: AsAdmin) -> NewToken:
        return NewToken(name=body.name, token=hub.add_user(body.name, body.role, by=admin.name))

    @api.post("/api/admin/nodes/{name}/revoke", tags=["admin"])
    def revoke_node(name: str, admin: AsAdmin) -> dict[str, str]:
        hub.revoke("node", name, by=admin.name)
        return {"revoked": name}

    @api.post("/api/admin/users/{name}/revoke", tags=["admin"])
    def revoke_user(name: str, admin: AsAdmin) -> dict[str, str]:
        hub.revoke("user", name, by=admin.name)
        return {"revoked": name}

    @api.post("/api/admin/import", tags=["admin"])
    def import_result(body: resultfile.ResultFile, admin: AsAdmin) -> Posted:
        """Take in an offline site's signed result file."""
        rec = import_file(hub, body, by=admin.name)
        return Posted(status=rec.status, task_id=rec.task_id)

    return api

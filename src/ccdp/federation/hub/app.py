"""The hub's HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Three doors: node routes (`/api/node/…`) accept only node tokens, researcher routes (`/api/…`)
only user tokens, admin routes (`/api/admin/…`) only admin users. A node sees only its own tasks
and no route ever gives a node any answer or result. Every body is a Pydantic model that refuses
unknown fields.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ccdp import __version__
from ccdp.errors import CcdpError, SpecError
from ccdp.federation import resultfile
from ccdp.federation.hub.docs import mount_docs
from ccdp.federation.hub.runner import StudyExecutor, StudyRunner
from ccdp.federation.hub.service import (
    Conflict,
    Forbidden,
    Hub,
    NotFound,
    Principal,
    Recorded,
)
from ccdp.federation.hub.wirecheck import BodyGate, MiB
from ccdp.wire.catalogue import Catalogue
from ccdp.wire.errors import MalformedSummary
from ccdp.wire.protocol import Answer, AuditHead, HeadAtHub, HeartbeatBody, Task

bearer = HTTPBearer(auto_error=False, description="A node or user token from `ccdp hub add-…`")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeInfo(Strict):
    name: str
    country: str


class Me(Strict):
    kind: Literal["node", "user"]
    name: str
    role: str | None = None


class TaskList(Strict):
    tasks: list[Task]


class Posted(Strict):
    status: Literal["accepted", "duplicate", "late"]
    task_id: str


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


class RequestProject(Strict):
    spec: dict[str, Any]


class ProjectRequested(Strict):
    project_id: str
    state: str


class Review(Strict):
    decision: Literal["approve", "reject"]
    reason: str | None = Field(None, max_length=2000)


class NodeDecisionBody(Strict):
    decision: Literal["accepted", "declined"]
    reason: str | None = Field(None, max_length=2000)


class CreateTrial(Strict):
    spec: dict[str, Any]


class RandomiseBody(Strict):
    patient: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The patient's pseudonym at the node (never a name or record number)",
    )
    strata: dict[str, Annotated[str, Field(max_length=100)]] = Field(
        default_factory=dict, max_length=6, description="The patient's value of each stratum"
    )


class Allocation(Strict):
    trial: str
    patient: str
    arm: str
    strata: dict[str, str]
    allocated_at: str
    repeated: bool | None = None


class ReferBody(Strict):
    node_ref: str = Field(
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The node's own id of the referral (random; never a patient key)",
    )
    question: str = Field(min_length=1, max_length=2000)
    summary: dict[str, Any] = Field(description="The case summary (ccdp.case-summary/1)")


class CommentBody(Strict):
    text: str = Field(min_length=1, max_length=4000)


class RecommendBody(Strict):
    recommendation: dict[str, Any] = Field(description="options, trial, text")


class NewToken(Strict):
    name: str
    token: str


MAX_BODY = 1 * MiB  # a study spec, a heartbeat, a new node: small
MAX_ANSWER_BODY = 16 * MiB  # a node's answer or an imported result file (event-time tables)
LARGE_BODY_ROUTES = ("/api/node/answers", "/api/admin/import")
MAX_DETAIL = 500  # characters of an error's summary line: an input is never echoed in full


def one_line(text: str) -> str:
    """An error message as one line of bounded length (a long input it quotes is cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 1] + "…"


def error_body(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every refusal of the hub: `detail`, one line saying what is wrong, and `errors`, each
    with the `loc` (where) and `msg` (what), never the value that was sent."""
    return {"detail": one_line(detail), "errors": errors or []}


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """FastAPI's validation errors without their `input` (it may be huge or a secret)."""
    errors = []
    for err in exc.errors():
        msg = one_line(str(err.get("msg", "invalid")).removeprefix("Value error, "))
        loc = [p if isinstance(p, int) else str(p)[:64] for p in err["loc"]]
        errors.append({"loc": loc, "msg": msg})
    if not errors:
        return error_body("the request is invalid")
    first = errors[0]
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return error_body(detail, errors)


def create_app(
    hub: Hub,
    executor: StudyExecutor,
    poll: float = 0.5,
    max_body: int = MAX_BODY,
    max_answer_body: int = MAX_ANSWER_BODY,
    dashboard: bool = True,
) -> FastAPI:
    """The ASGI app over `hub`; `executor` validates and runs studies. Request bodies are
    limited to `max_body` bytes, node answers and result-file imports to `max_answer_body`.
    The web dashboard (`ccdp.web`) is served at `/` unless `dashboard` is false."""
    if max_body < 1 or max_answer_body < 1:
        raise ValueError("body limits must be positive numbers of bytes")
    runner = StudyRunner(hub, executor, poll=poll)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.waker.bind(asyncio.get_running_loop())
        runner.resume_all()
        yield
        await run_in_threadpool(runner.stop)

    app = FastAPI(
        title="ccdp hub",
        version=__version__,
        description="Coordinates federated studies: node agents poll for tasks and post "
        "disclosure-checked answers; researchers submit studies and read results.",
        lifespan=lifespan,
        docs_url=None,  # served by mount_docs, from the package rather than a CDN
        redoc_url=None,
    )
    mount_docs(app)
    app.state.hub, app.state.runner = hub, runner

    def limit_for(path: str) -> int:
        return max_answer_body if path in LARGE_BODY_ROUTES else max_body

    app.add_middleware(BodyGate, limit_for=limit_for)

    @app.exception_handler(CcdpError)
    async def _ccdp_error(_req: Request, exc: CcdpError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        if isinstance(exc, Forbidden):
            code = 403
        errors = None
        if isinstance(exc, SpecError | MalformedSummary):
            code = 422
            errors = [{"loc": ["body"], "msg": one_line(str(exc))}]
        return JSONResponse(error_body(str(exc), errors), status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {req.url.path[:200]}"
        elif exc.status_code == 405:
            detail = f"{req.method[:20]} is not allowed on {req.url.path[:200]}"
        return JSONResponse(error_body(detail), status_code=exc.status_code, headers=exc.headers)

    def principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if creds is None:
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        who = hub.authenticate(creds.credentials)
        if who is None:
            raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
        return who

    def need(kind: str, *roles: str) -> Callable[[Principal], Principal]:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if who.kind != kind:
                raise HTTPException(403, f"a {who.kind} token cannot be used on {kind} routes")
            if roles and who.role not in roles:
                raise HTTPException(
                    403, f"this route needs the {' or '.join(roles)} role, not {who.role}"
                )
            return who

        return check

    AsNode = Annotated[Principal, Depends(need("node"))]
    AsUser = Annotated[Principal, Depends(need("user"))]
    AsAdmin = Annotated[Principal, Depends(need("user", "admin"))]
    # the board reviews projects and runs no study; researchers request and run, never review
    AsResearcher = Annotated[Principal, Depends(need("user", "researcher", "admin"))]
    AsBoard = Annotated[Principal, Depends(need("user", "board"))]

    @app.get("/api/health", tags=["hub"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/me", tags=["hub"])
    def me(who: Annotated[Principal, Depends(principal)]) -> Me:
        """Who this token is: a node or a user, and a user's role (the dashboard's sign-in)."""
        return Me(kind=who.kind, name=who.name, role=who.role)

    # ---- node routes ---------------------------------------------------------------------
    @app.get("/api/node/me", tags=["node"])
    def node_me(node: AsNode) -> NodeInfo:
        info = next(n for n in hub.nodes() if n["name"] == node.name)
        return NodeInfo(name=node.name, country=info["country"])

    @app.get("/api/node/tasks", tags=["node"])
    async def node_tasks(
        node: AsNode,
        wait: Annotated[float, Query(ge=0, le=60, description="long-poll seconds")] = 0,
        redeliver: Annotated[bool, Query(description="also tasks delivered, unanswered")] = False,
    ) -> TaskList:
        """This node's open tasks; waits up to `wait` seconds for one to appear."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            woken = hub.waker.event(f"node:{node.id}")
            tasks = await run_in_threadpool(hub.pending_tasks, node.id, redeliver)
            left = until - loop.time()
            if tasks or left <= 0 or hub.waker.closing:
                return TaskList(tasks=tasks)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=left)

    @app.get("/api/node/tasks/{task_id}", tags=["node"])
    def node_task(task_id: str, node: AsNode) -> Task:
        return hub.task_for_node(task_id, node.id)

    @app.post("/api/node/answers", tags=["node"])
    def node_answer(answer: Answer, node: AsNode) -> Posted:
        """Post an answer; posting the same answer again is harmless (idempotent)."""
        rec = hub.record_answer(node.id, answer)
        return Posted(status=rec.status, task_id=rec.task_id)

    @app.post("/api/node/heartbeat", tags=["node"])
    def node_heartbeat(node: AsNode, body: HeartbeatBody | None = None) -> Heartbeat:
        """The node is alive; its audit head, if sent, is kept (never lowered: see alerts)."""
        held = None
        if body is not None and body.audit_head is not None:
            held = hub.record_audit_head(node.id, body.audit_head, "heartbeat").head
        info = next(n for n in hub.nodes() if n["name"] == node.name)
        return Heartbeat(node=node.name, at=info["last_seen"], audit_head=held)

    @app.get("/api/node/audit-head", tags=["node"])
    def node_audit_head(node: AsNode) -> HeadAtHub:
        """The highest audit head this node sent, and any alert about it."""
        return hub.audit_head(node.id)

    @app.put("/api/node/catalogue", tags=["node"])
    def node_catalogue(body: Catalogue, node: AsNode) -> dict[str, Any]:
        """Publish this node's catalogue (computed and disclosure-checked at the node); the
        hub keeps the latest one. A catalogue naming another node is refused (403)."""
        return hub.publish_catalogue(node, body)

    # ---- researcher routes ---------------------------------------------------------------
    @app.get("/api/nodes", tags=["researcher"])
    def list_nodes(_user: AsUser) -> list[dict[str, Any]]:
        """Registered nodes with their last-seen time (heartbeats and polls)."""
        return hub.nodes()

    @app.get("/api/catalogues", tags=["researcher"])
    def list_catalogues(_user: AsUser) -> list[dict[str, Any]]:
        """Every node's latest catalogue (the resource map): node, country, received_at,
        catalogue."""
        return hub.catalogues()

    @app.get("/api/catalogues/{node}", tags=["researcher"])
    def show_catalogue(node: str, _user: AsUser) -> dict[str, Any]:
        """One node's latest catalogue (404 if it has published none)."""
        return hub.catalogue(node)

    @app.post("/api/studies", tags=["researcher"], status_code=201)
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

    @app.get("/api/studies", tags=["researcher"])
    def list_studies(user: AsUser) -> list[dict[str, Any]]:
        return hub.studies(user)

    @app.get("/api/studies/{study_id}", tags=["researcher"])
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

    # ---- projects (governance/hub_projects.py) -------------------------------------------
    @app.post("/api/projects", tags=["projects"], status_code=201)
    def request_project(body: RequestProject, user: AsResearcher) -> ProjectRequested:
        """A researcher's access request; the board reviews it, each node's custodian decides."""
        return ProjectRequested(project_id=hub.projects.request(user, body.spec), state="requested")

    @app.get("/api/projects", tags=["projects"])
    def list_projects(user: AsUser) -> list[dict[str, Any]]:
        """A researcher's own projects; the board and admins see every project."""
        return hub.projects.all(user)

    @app.get("/api/projects/{project_id}", tags=["projects"])
    def show_project(project_id: str, user: AsUser) -> dict[str, Any]:
        """A project's state, terms, the board's decision and each node's decision."""
        return hub.projects.show(project_id, user)

    @app.post("/api/projects/{project_id}/review", tags=["projects"])
    def review_project(project_id: str, body: Review, board: AsBoard) -> ProjectRequested:
        """The board approves or rejects a requested project (a rejection gives its reason)."""
        state = hub.projects.review(board, project_id, body.decision == "approve", body.reason)
        return ProjectRequested(project_id=project_id, state=state)

    @app.get("/api/node/projects", tags=["node"])
    def node_projects(node: AsNode) -> list[dict[str, Any]]:
        """Projects that name this node, for its custodian to decide at the node."""
        return hub.projects.all(node)

    @app.get("/api/node/projects/{project_id}", tags=["node"])
    def node_project(project_id: str, node: AsNode) -> dict[str, Any]:
        return hub.projects.show(project_id, node)

    @app.post("/api/node/projects/{project_id}/decision", tags=["node"])
    def node_decision(project_id: str, body: NodeDecisionBody, node: AsNode) -> dict[str, Any]:
        """Relay the decision the custodian made (and recorded) at the node."""
        return hub.projects.decide(node, project_id, body.decision, body.reason)

    # ---- trials (federation/hub/trials.py; docs/randomisation.md) ----------------------
    @app.post("/api/trials", tags=["trials"], status_code=201)
    def create_trial(body: CreateTrial, admin: AsAdmin) -> dict[str, Any]:
        """Create a trial (admin): arms, ratio, strata, method; the hub draws its secret seed."""
        return hub.trials.create(admin, body.spec)

    @app.get("/api/trials", tags=["trials"])
    def list_trials(_user: AsUser) -> list[dict[str, Any]]:
        """Trials: name, arms, ratio, strata, method and how many were randomised (never the
        counts per arm, the list or the seed: see the allocations route)."""
        return hub.trials.all()

    @app.get("/api/trials/{name}", tags=["trials"])
    def show_trial(name: str, _who: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
        """One trial's public description (users and nodes)."""
        return hub.trials.show(name)

    @app.get("/api/trials/{name}/allocations", tags=["trials"])
    def trial_allocations(name: str, who: AsUser) -> dict[str, Any]:
        """The allocation list, counts per arm and the seed: the trial's statistician only."""
        return hub.trials.allocations(who, name)

    @app.post("/api/node/trials/{name}/randomise", tags=["node"])
    def node_randomise(name: str, body: RandomiseBody, node: AsNode) -> Allocation:
        """Randomise this node's patient (pseudonym and strata only); asking again for the same
        patient returns the same arm."""
        return Allocation(**hub.trials.randomise(node, name, body.patient, body.strata))

    @app.get("/api/node/trials/{name}/allocations", tags=["node"])
    def node_allocations(name: str, node: AsNode) -> list[Allocation]:
        """The arms of this node's own patients in a trial."""
        return [Allocation(**a) for a in hub.trials.node_allocations(node, name)]

    # ---- referrals (federation/hub/referrals.py; docs/referrals.md) ---------------------
    @app.post("/api/node/referrals", tags=["node"], status_code=201)
    def node_refer(body: ReferBody, node: AsNode) -> dict[str, Any]:
        """A case summary the node's custodian released, for the expert board."""
        return hub.referrals.receive(node, body.node_ref, body.summary, body.question)

    @app.get("/api/node/referrals", tags=["node"])
    def node_referrals(node: AsNode) -> list[dict[str, Any]]:
        """This node's referrals: state and the board's recommendation."""
        return hub.referrals.node_list(node)

    @app.get("/api/referrals", tags=["referrals"])
    def list_referrals(who: AsUser) -> list[dict[str, Any]]:
        """Referrals to the board (role expert): one line each."""
        return hub.referrals.all(who)

    @app.get("/api/referrals/{ref}", tags=["referrals"])
    def show_referral(ref: str, who: AsUser) -> dict[str, Any]:
        """One case in full, with the board's comments (role expert; audited)."""
        return hub.referrals.show(who, ref)

    @app.post("/api/referrals/{ref}/comments", tags=["referrals"], status_code=201)
    def comment_referral(ref: str, body: CommentBody, who: AsUser) -> dict[str, Any]:
        """Add to the board's discussion of a case (role expert)."""
        return hub.referrals.comment(who, ref, body.text)

    @app.post("/api/referrals/{ref}/recommendation", tags=["referrals"])
    def recommend_referral(ref: str, body: RecommendBody, who: AsUser) -> dict[str, Any]:
        """Record the board's recommendation (role expert; once): it returns to the node."""
        return hub.referrals.recommend(who, ref, body.recommendation)

    # ---- admin routes --------------------------------------------------------------------
    @app.post("/api/admin/nodes", tags=["admin"], status_code=201)
    def add_node(body: NewNode, admin: AsAdmin) -> NewToken:
        token = hub.add_node(body.name, body.country, body.public_key, by=admin.name)
        return NewToken(name=body.name, token=token)

    @app.post("/api/admin/users", tags=["admin"], status_code=201)
    def add_user(body: NewUser, admin: AsAdmin) -> NewToken:
        return NewToken(name=body.name, token=hub.add_user(body.name, body.role, by=admin.name))

    @app.post("/api/admin/nodes/{name}/revoke", tags=["admin"])
    def revoke_node(name: str, admin: AsAdmin) -> dict[str, str]:
        hub.revoke("node", name, by=admin.name)
        return {"revoked": name}

    @app.post("/api/admin/users/{name}/revoke", tags=["admin"])
    def revoke_user(name: str, admin: AsAdmin) -> dict[str, str]:
        hub.revoke("user", name, by=admin.name)
        return {"revoked": name}

    @app.post("/api/admin/import", tags=["admin"])
    def import_result(body: resultfile.ResultFile, admin: AsAdmin) -> Posted:
        """Take in an offline site's signed result file."""
        rec = import_file(hub, body, by=admin.name)
        return Posted(status=rec.status, task_id=rec.task_id)

    @app.get("/api/admin/audit", tags=["admin"])
    def audit(_admin: AsAdmin, limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> list[Any]:
        """The latest audit records, newest first (seq, time, actor, action, detail, hashes)."""
        return hub.audit_log(limit)

    @app.get("/api/admin/audit/verify", tags=["admin"])
    def audit_verify(_admin: AsAdmin) -> dict[str, Any]:
        """Walk the whole audit chain: `ok`, the head, and the first bad seq with the reason."""
        return hub.verify_audit().to_json()

    @app.get("/api/board/refusals", tags=["board"])
    def refusals(
        who: AsUser,
        project: Annotated[str | None, Query(max_length=200, description="one project")] = None,
    ) -> list[dict[str, Any]]:
        """Per study (and project), the nodes' refusals and withheld parts, as the nodes' gates
        worded them: what the board reviews (board or admin role)."""
        if who.role not in ("board", "admin"):
            raise HTTPException(403, "this route needs the board or admin role")
        return hub.refusals(project)

    if dashboard:
        from ccdp.web.dashboard import mount_dashboard

        mount_dashboard(app)
    return app


def import_file(hub: Hub, rf: resultfile.ResultFile, by: str = "admin") -> Recorded:
    """Verify a signed result file against the node's registered secret, then record it."""
    node_id, token_digest, public_key = hub.node_of_name(rf.node)
    resultfile.verify(rf, token_digest, public_key)
    if rf.answer.node != rf.node:
        raise Conflict(f"result file signed by {rf.node!r} carries an answer of {rf.answer.node!r}")
    held = hub.task_for_node(rf.answer.task_id, node_id)
    if resultfile.canonical(held.model_dump(mode="json")) != resultfile.canonical(
        rf.task.model_dump(mode="json")
    ):
        raise Conflict(f"result file answers a task that differs from task {held.task_id}")
    return hub.record_answer(node_id, rf.answer, source="file", by=by)

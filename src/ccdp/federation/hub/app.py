"""The hub's composition root and HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

`Hub` builds the context, the core and the built-in features; `create_app` puts the core's and
every feature's router on one app, behind the same doors (doors.py), and mounts the dashboard it
is given. Like Datasette's built-in plug-ins, each feature comes in through the same two hooks a
new one would use (an object built from the context, a router built from that object), and the
core never imports a feature. The hub imports nothing from `ccdp.web`: whoever wants the
dashboard passes it (`ccdp hub serve` does).
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import import_module
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from ccdp import __version__
from ccdp.analyses.base import Analysis
from ccdp.federation.hub import (
    alerts,
    auditlog,
    board,
    catalogues,
    ccdi,
    projects,
    referrals,
    routes,
    trials,
)
from ccdp.federation.hub.alerts import Alerts
from ccdp.federation.hub.audit import Verified
from ccdp.federation.hub.auditlog import AuditLog
from ccdp.federation.hub.board import Board
from ccdp.federation.hub.catalogues import Catalogues
from ccdp.federation.hub.ccdi import Ccdi
from ccdp.federation.hub.context import HubContext, Principal
from ccdp.federation.hub.docs import mount_docs
from ccdp.federation.hub.doors import add_error_handlers
from ccdp.federation.hub.projects import Projects
from ccdp.federation.hub.referrals import Referrals
from ccdp.federation.hub.runner import StudyExecutor, StudyRunner
from ccdp.federation.hub.service import HubCore, import_file, registered_analysis
from ccdp.federation.hub.trials import Trials
from ccdp.federation.hub.wirecheck import BodyGate, MiB
from ccdp.wire.catalogue import Catalogue
from ccdp.wire.protocol import Clock, utcnow

__all__ = ["MAX_ANSWER_BODY", "MAX_BODY", "Hub", "create_app", "import_file"]

MAX_BODY = 1 * MiB  # a study spec, a heartbeat, a new node: small
MAX_ANSWER_BODY = 16 * MiB  # a node's answer or an imported result file (event-time tables)
LARGE_BODY_ROUTES = ("/api/node/answers", "/api/admin/import")


class Hub(HubCore):
    """The hub as it is served and as the CLI opens it: the core, with its built-in features
    built from the same context (`projects` also admits studies, the core's one contract)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        analyses: Callable[[str], Analysis | None] = registered_analysis,
        open_studies: bool = False,
        clock: Clock = utcnow,
    ) -> None:
        """`open_studies` (`ccdp hub serve --open`): also run studies without a project;
        `clock` decides deadlines and expiry (a test passes one it moves)."""
        context = HubContext(sessions, clock=clock)
        self.projects = Projects(context)
        super().__init__(context, self.projects, analyses, open_studies)
        self.trials = Trials(context)
        self.referrals = Referrals(context)
        self.resource_map = Catalogues(context)
        self.ccdi = Ccdi(context, self.resource_map)
        self.board = Board(context)
        self.audit = AuditLog(context)
        self.alerts = Alerts(context)

    # the features' operations the CLI and tests ask of the hub itself
    def publish_catalogue(self, node: Principal, catalogue: Catalogue) -> dict[str, Any]:
        return self.resource_map.publish(node, catalogue)

    def catalogues(self) -> list[dict[str, Any]]:
        return self.resource_map.all()

    def catalogue(self, name: str) -> dict[str, Any]:
        return self.resource_map.show(name)

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        return self.audit.latest(limit)

    def verify_audit(self) -> Verified:
        return self.audit.verify()

    def refusals(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.board.refusals(project)

    def disclosure_alerts(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.alerts.all(project)


def add_routes(api: APIRouter, hub: Hub, runner: StudyRunner, executor: StudyExecutor) -> None:
    """Put the core's routes and each feature's on `api`, in the order /docs lists them. `api`
    is the app's own router, so each route stays a plain route of the app (`app.routes` lists
    it, as the hardening test walks them; an included router would be one opaque entry). A
    feature is reached through the hub at request time, so a subclass's (a test's) is used."""
    routes.hub_router(api=api)
    routes.node_router(hub, api=api)
    catalogues.router(lambda: hub.resource_map, api=api)
    routes.nodes_router(hub, api=api)
    routes.study_router(hub, runner, executor, api=api)
    projects.router(lambda: hub.projects, api=api)
    trials.router(lambda: hub.trials, api=api)
    referrals.router(lambda: hub.referrals, api=api)
    routes.admin_router(hub, api=api)
    auditlog.router(lambda: hub.audit, api=api)
    board.router(lambda: hub.board, api=api)
    alerts.router(lambda: hub.alerts, api=api)
    ccdi.router(lambda: hub.ccdi, api=api)


log = logging.getLogger("ccdp.hub")

# what a worker imports once it serves: the count (a study usually starts with one) and, with
# it, pandas, which the worker no longer loads before serving
WARM_UP = ("ccdp.analyses.count",)


def warm_up() -> None:
    """Import WARM_UP in the background: the worker answers its first requests ~0.4 s sooner
    than if it loaded them at start, and its first study does not wait for them either."""
    for module in WARM_UP:
        try:
            import_module(module)
        except Exception:  # the study that needs it reports the error; never the warm-up
            log.warning("warm-up import of %s failed", module, exc_info=True)


def lifespan(
    hub: HubCore, runner: StudyRunner
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Bind the waker to the server's loop and resume unfinished studies; stop them at exit
    and close the token checks' connections."""

    @asynccontextmanager
    async def run(_app: FastAPI) -> AsyncIterator[None]:
        hub.waker.bind(asyncio.get_running_loop())
        runner.resume_all()
        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
        yield
        await run_in_threadpool(runner.stop)
        await hub.tokens.close()  # the token checks' own connections (tokenbook.py)
        if hub.loop_reads is not None:  # the lists' own connections (loopreads.py)
            await hub.loop_reads.close()

    return run


def create_app(
    hub: Hub,
    executor: StudyExecutor,
    poll: float = 0.5,
    max_body: int = MAX_BODY,
    max_answer_body: int = MAX_ANSWER_BODY,
    dashboard: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """The ASGI app over `hub`; `executor` validates and runs studies. Request bodies are
    limited to `max_body` bytes, node answers and result-file imports to `max_answer_body`.
    `dashboard` (e.g. `ccdp.web.dashboard.mount_dashboard`) adds the web pages at `/`."""
    if max_body < 1 or max_answer_body < 1:
        raise ValueError("body limits must be positive numbers of bytes")
    runner = StudyRunner(hub, executor, poll=poll)
    app = FastAPI(
        title="ccdp hub",
        version=__version__,
        description="Coordinates federated studies: node agents poll for tasks and post "
        "disclosure-checked answers; researchers submit studies and read results.",
        lifespan=lifespan(hub, runner),
        docs_url=None,  # served by mount_docs, from the package rather than a CDN
        redoc_url=None,
    )
    mount_docs(app)
    app.state.hub, app.state.runner = hub, runner

    def limit_for(path: str) -> int:
        return max_answer_body if path in LARGE_BODY_ROUTES else max_body

    app.add_middleware(BodyGate, limit_for=limit_for)
    add_error_handlers(app)
    add_routes(app.router, hub, runner, executor)
    if dashboard is not None:
        dashboard(app)
    return app

"""The linkage service over HTTP (FastAPI), behind the hub's doors: bearer tokens checked by the
service (`app.state.hub` is the service: the doors ask it), strict bodies, every body through the
hub's gate (size, JSON form) and every refusal in the hub's one error shape.

Admin routes (`/api/admin/…`) take the service's admin tokens; node routes (`/api/node/…`) its
node tokens, each node seeing only the runs that name it and only its own results. The app
starts the service's link worker (a thread) with itself and stops it on shutdown: linking never
runs inside a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.concurrency import run_in_threadpool

from ccdp import __version__
from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.doors import AsAdmin, AsNode, add_error_handlers
from ccdp.federation.hub.wirecheck import BodyGate, MiB
from ccdp.federation.linkage.protocol import NAME, CreateRun, Upload, Years
from ccdp.federation.linkage.service import LinkageService
from ccdp.federation.linkage.worker import LinkWorker

MAX_BODY = 64 * 1024  # a new run, a confirmation: small
MAX_UPLOAD = 256 * MiB  # 1,000,000 records of 1,024 bits with pseudonyms and years
MAX_WAIT = 30.0

RunId = Annotated[str, Path(pattern=NAME, max_length=64)]


def create_app(
    service: LinkageService,
    max_body: int = MAX_BODY,
    max_upload: int = MAX_UPLOAD,
    worker_poll: float = 5.0,
) -> FastAPI:
    """The service's app: `max_upload` bytes for an upload of encodings, `max_body` for the rest;
    its link worker looks for pending runs every `worker_poll` seconds besides its wake-ups."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = LinkWorker(service, poll=worker_poll).start()
        _app.state.worker = worker
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPI(title="ccdp linkage service", version=__version__, lifespan=lifespan)
    app.state.hub = service  # the doors authenticate tokens with `app.state.hub.authenticate`
    add_error_handlers(app)

    def limit_for(path: str) -> int:
        return max_upload if path.endswith(("/clks", "/years")) else max_body

    app.add_middleware(BodyGate, limit_for=limit_for)

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "service": "linkage", "version": __version__}

    @app.post("/api/admin/runs", status_code=201, tags=["admin"])
    def create_run(admin: AsAdmin, body: CreateRun) -> dict[str, Any]:
        """A run: its id, its nodes (each added with `ccdp linkage add-node`), the threshold."""
        return service.create_run(admin, body)

    @app.get("/api/admin/runs/{run_id}", tags=["admin"])
    def admin_status(admin: AsAdmin, run_id: RunId) -> dict[str, Any]:
        return service.status(admin, run_id)

    @app.post("/api/admin/runs/{run_id}/cancel", tags=["admin"])
    def cancel(admin: AsAdmin, run_id: RunId) -> dict[str, Any]:
        """Give the run up: its encodings and groups are deleted; its nodes see `cancelled`."""
        return service.cancel(admin, run_id)

    @app.get("/api/admin/audit", tags=["admin"])
    def audit(_admin: AsAdmin) -> dict[str, Any]:
        """Every record of the service's audit chain, and whether the chain holds."""
        return {
            "records": hub_audit.records(service.sessions),
            "verified": hub_audit.verify(service.sessions).to_json(),
        }

    @app.post("/api/node/runs/{run_id}/clks", tags=["node"])
    def upload(node: AsNode, run_id: RunId, body: Upload) -> dict[str, Any]:
        """This node's encodings for the run (once); the last node's upload starts the run's
        linking in the background and returns at once (state `linking`)."""
        return service.upload(node, run_id, body)

    @app.get("/api/node/runs/{run_id}", tags=["node"])
    async def node_status(
        node: AsNode,
        run_id: RunId,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0,
    ) -> dict[str, Any]:
        """The run's state; with `wait`, held up to that many seconds while this node's next
        step waits on the other nodes."""
        end = time.monotonic() + wait
        while True:
            status = await run_in_threadpool(service.status, node, run_id)
            if not status["wait"] or time.monotonic() >= end:
                return status
            await asyncio.sleep(min(0.25, max(0.0, end - time.monotonic())))

    @app.get("/api/node/runs/{run_id}/groups", tags=["node"])
    def groups(node: AsNode, run_id: RunId) -> dict[str, Any]:
        """This node's linked records: per-run pseudonym, group id, group size, and `keep` once
        every node has sent its years."""
        return service.groups(node, run_id)

    @app.post("/api/node/runs/{run_id}/years", tags=["node"])
    def years(node: AsNode, run_id: RunId, body: Years) -> dict[str, Any]:
        """The earliest diagnosis year of each of this node's linked records (and no other)."""
        return service.years(node, run_id, body)

    @app.post("/api/node/runs/{run_id}/confirm", tags=["node"])
    def confirm(node: AsNode, run_id: RunId) -> dict[str, Any]:
        """The node stored its groups: the service deletes them."""
        return service.confirm(node, run_id)

    return app

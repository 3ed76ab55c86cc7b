"""Run the hub with uvicorn (plain HTTP or TLS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccdp.errors import CcdpError
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.runner import StudyExecutor

if TYPE_CHECKING:
    from fastapi import FastAPI


class HubServeError(CcdpError):
    """The hub cannot start (bad TLS files, port in use...)."""


def serve(
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8700,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    executor: StudyExecutor | None = None,
    poll: float = 0.5,
    log_level: str = "warning",
    max_body: int | None = None,
    max_answer_body: int | None = None,
    open_studies: bool = False,
    audit_key: Path | None = None,
    dashboard: Callable[[FastAPI], None] | None = None,
) -> None:
    """Open (and migrate) the database, then serve until interrupted; the body limits (bytes)
    default to create_app's; `audit_key` is the file of the audit-log key (see audit.py);
    `dashboard` mounts the web pages (see create_app)."""
    import uvicorn

    from ccdp.federation.hub.app import MAX_ANSWER_BODY, MAX_BODY, Hub, create_app

    if (certfile is None) != (keyfile is None):
        raise HubServeError("TLS needs both --certfile and --keyfile")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            raise HubServeError(f"TLS file not found: {f}")
    if executor is None:
        from ccdp.federation.hub.studies import SpecExecutor

        executor = SpecExecutor()
    hub = Hub(open_database(db_url, audit_key), open_studies=open_studies)
    app = create_app(
        hub,
        executor,
        poll=poll,
        max_body=max_body or MAX_BODY,
        max_answer_body=max_answer_body or MAX_ANSWER_BODY,
        dashboard=dashboard,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        log_level=log_level,
        timeout_graceful_shutdown=3,
    )
    scheme = "https" if certfile else "http"
    print(f"ccdp hub listening on {scheme}://{host}:{port} (db {db_url})", flush=True)

    class HubServer(uvicorn.Server):
        """On SIGTERM/SIGINT, first release the long-polls, so shutdown takes well under a
        second instead of waiting out the graceful timeout and cancelling them (tracebacks)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            hub.waker.close()
            super().handle_exit(sig, frame)

    HubServer(config).run()

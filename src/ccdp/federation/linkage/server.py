"""Run the linkage service with uvicorn (plain HTTP or TLS), as `ccdp linkage serve` does."""

from __future__ import annotations

from pathlib import Path

from ccdp.federation.hub.server import HubServeError
from ccdp.federation.linkage.app import MAX_UPLOAD, create_app
from ccdp.federation.linkage.db import open_database
from ccdp.federation.linkage.service import LinkageService


def serve(
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8710,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    audit_key: Path | None = None,
    max_upload: int = MAX_UPLOAD,
    log_level: str = "warning",
) -> None:
    """Open the database (tables created if absent), then serve until interrupted."""
    import uvicorn

    if (certfile is None) != (keyfile is None):
        raise HubServeError("TLS needs both --certfile and --keyfile")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            raise HubServeError(f"TLS file not found: {f}")
    service = LinkageService(open_database(db_url, audit_key))
    app = create_app(service, max_upload=max_upload)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        log_level=log_level,
        access_log=False,  # a path names a run, never a person; still, keep logs to errors
        timeout_graceful_shutdown=3,
    )
    scheme = "https" if certfile else "http"
    print(f"ccdp linkage service listening on {scheme}://{host}:{port} (db {db_url})", flush=True)
    uvicorn.Server(config).run()

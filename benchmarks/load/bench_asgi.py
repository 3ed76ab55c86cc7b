"""The hub app's own CPU per request, in one process: no server, no socket, no client.

The hub's ASGI app (with the dashboard, as `ccdp hub serve` builds it) is called directly by
`--clients` concurrent coroutines on uvloop, `--requests` GETs each per route, with a
researcher's token; the figure is the process's CPU time per request. What `bench_reads.py`
measures through uvicorn and a client on the same two cores, without the server's and the
client's share, so that a change to a route's path shows at once. `--no-token-read` replaces the
token check by its answer (what the rest of the route costs), `--no-hop` also runs the worker
thread's function inline (what the hop costs): the two say where a request's time goes.

    python benchmarks/load/bench_asgi.py                       # SQLite
    python benchmarks/load/bench_asgi.py --db postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

ROUTES = ("/api/health", "/api/me", "/api/studies", "/api/nodes")


def scope(path: str, token: str) -> dict[str, Any]:
    """A keep-alive GET as uvicorn hands it to the app."""
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip


async def get(app: Any, path: str, token: str) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(path, token), receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"{path}: HTTP {sent[0]['status']}")


async def measure(app: Any, token: str, clients: int, requests: int) -> None:
    async def client(path: str) -> None:
        for _ in range(requests):
            await get(app, path, token)

    for path in ROUTES:
        await asyncio.gather(*(client(path) for _ in range(clients)))  # warm
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(path) for _ in range(clients)))
        n = clients * requests
        print(
            f"  {path:14s} CPU {(time.process_time() - cpu) / n * 1e3:6.3f} ms/req   "
            f"wall {(time.perf_counter() - wall) / n * 1e3:6.3f} ms/req"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="a PostgreSQL admin URL (a fresh database is made and dropped)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--no-token-read", action="store_true")
    ap.add_argument("--no-hop", action="store_true")
    a = ap.parse_args()
    import uvloop
    from benchmarks.load.bench_load import fresh_database

    if a.db:
        with fresh_database(a.db) as url:
            run(url, a, uvloop)
    else:
        run(f"sqlite:///{tempfile.mkdtemp()}/hub.db", a, uvloop)


def run(url: str, a: argparse.Namespace, uvloop: Any) -> None:
    from ccdp.federation.hub import members, routes
    from ccdp.federation.hub.app import Hub, create_app
    from ccdp.federation.hub.db import open_database
    from ccdp.federation.hub.studies import SpecExecutor
    from ccdp.web.dashboard import mount_dashboard

    hub = Hub(open_database(url))
    app = create_app(hub, SpecExecutor(), dashboard=mount_dashboard)
    token = hub.add_user("researcher", "researcher")
    for i in range(a.nodes):
        hub.add_node(f"node-{i}", "FR")
    if a.no_token_read:
        who = hub.authenticate(token)

        async def known(_token: str) -> Any:
            return who

        hub.check_token = known  # type: ignore[method-assign]
    if a.no_hop:

        async def inline(fn: Any, *args: Any) -> Any:
            return fn(*args)

        async def run_sync(fn: Any, *args: Any, limiter: Any = None) -> Any:
            return fn(*args)

        members.run_in_threadpool = inline  # type: ignore[assignment]
        routes.to_thread = SimpleNamespace(run_sync=run_sync)  # type: ignore[assignment]
    print(f"hub app on {url.split('://')[0]}, {a.clients} clients x {a.requests} GETs a route")
    uvloop.run(measure(app, token, a.clients, a.requests))
    hub.sessions.kw["bind"].dispose()


if __name__ == "__main__":
    main()

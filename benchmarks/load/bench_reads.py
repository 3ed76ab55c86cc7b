"""Authenticated reads under load: a real hub (`ccdp hub serve`) and C concurrent clients.

For each database (SQLite, and a fresh PostgreSQL database created and dropped here), a hub is
started on a free loopback port, a researcher, `--nodes` nodes and `--studies` finished studies
are added, then `--clients` clients, each on its own keep-alive connection, make `--requests`
GETs each to /api/me, /api/studies and /api/nodes with the researcher's token. Per route:
requests/s, p50/p95/p99 latency, errors, and the hub's own CPU time per request (from
/proc/<pid>/stat, user + system), the fairer figure: client and server share the machine's
cores, so the wall-clock rate is partly the client's.

Baselines in the same run, under the same load: the hub's unauthenticated /api/health (what
the app costs without a token or a query), and a bare ASGI app on the same uvicorn (the ceiling
of the server itself).

    python benchmarks/load/bench_reads.py --clients 50 --requests 40

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams rather than httpx: the
client shares the cores with the hub, so the less it spends per request the less it takes from
the figure it measures. `--plain-http` also runs the hub without uvloop/httptools (asyncio +
h11), to see what those give. `--profile DIR` records py-spy's stacks of the hub under the
load of `--profile-route` (default /api/me; only threads holding the GIL, folded text:
`DIR/<backend>-<route>.folded`). `--src DIR` serves the hub of another source tree (a `git
archive` of an older commit) to measure a before and an after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `--src DIR`: measure the hub of another source tree (e.g. `git archive` of an older commit)
SRC = Path(sys.argv[sys.argv.index("--src") + 1]) if "--src" in sys.argv else ROOT / "src"
sys.path[:0] = [str(SRC)]

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROUTES = ("/api/me", "/api/studies", "/api/nodes")
TICKS = os.sysconf("SC_CLK_TCK")
BARE_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"status":"ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
# put first on the path of a --plain-http server: uvicorn's "auto" then finds neither
NO_FAST_SERVER = "import sys\nsys.modules['uvloop'] = None\nsys.modules['httptools'] = None\n"


@dataclass
class Figures:
    route: str
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float
    latencies: list[float]

    def line(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
        rate = self.requests / self.seconds if self.seconds else 0.0
        cpu = 1000 * self.cpu_seconds / max(1, self.requests)
        return (
            f"  {self.route:<14} {rate:8.0f} req/s  p50 {1000 * q[49]:7.1f} ms  "
            f"p95 {1000 * q[94]:7.1f} ms  p99 {1000 * q[98]:7.1f} ms  "
            f"hub CPU {cpu:6.3f} ms/req  errors {self.errors}"
        )


# ---- the client ------------------------------------------------------------------------
async def one_client(port: int, path: str, token: str | None, n: int, lat: list[float]) -> int:
    """`n` GETs of `path` on one keep-alive connection; returns how many failed."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    request = (head + "\r\n").encode()
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status_line.split(b" ", 2)[1:2] != [b"200"]:
                errors += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors


# wrk's Lua hook: its summary on one line (latencies in microseconds, errors of every kind)
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_load(
    port: int, pid: int, path: str, token: str | None, clients: int, seconds: float, tmp: Path
) -> str:
    """The same load from `wrk` (one C thread, `clients` keep-alive connections, for `seconds`):
    it spends a fraction of the Python client's CPU per request, so more of the machine's two
    cores is left to the hub; wrk counts any non-2xx/3xx answer as an error."""
    script = tmp / "done.lua"
    script.write_text(WRK_DONE)
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", str(script)]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    cpu = cpu_seconds(pid) - cpu0
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    n, errors, micros, p50, p95, p99 = (int(x) for x in line.split()[1:])
    return (
        f"  {path:<14} {n / (micros / 1e6):8.0f} req/s  p50 {p50 / 1000:7.1f} ms  "
        f"p95 {p95 / 1000:7.1f} ms  p99 {p99 / 1000:7.1f} ms  "
        f"hub CPU {1000 * cpu / max(1, n):6.3f} ms/req  errors {errors}  (wrk)"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def load(port: int, pid: int, path: str, token: str | None, clients: int, n: int) -> Figures:
    lat: list[float] = []
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    errors = await asyncio.gather(*(one_client(port, path, token, n, lat) for _ in range(clients)))
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return Figures(path, clients * n, sum(errors), seconds, cpu, lat)


# ---- the servers -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(plain: Path | None = None) -> dict[str, str]:
    e = dict(os.environ)
    paths = [str(SRC), e.get("PYTHONPATH", "")]
    if plain is not None:
        paths.insert(0, str(plain))
    e["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return e


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not answer")


@contextmanager
def server(args: list[str], port: int, plain: Path | None) -> Iterator[int]:
    proc = subprocess.Popen(args, env=env(plain), stdout=subprocess.DEVNULL)
    try:
        wait_up(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the hub's data ----------------------------------------------------------------------
def seed(url: str, key: Path, nodes: int, studies: int) -> str:
    """A researcher (whose token is returned), `nodes` nodes and `studies` finished studies."""
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    hub = Hub(open_database(url, key), open_studies=True)
    token = hub.add_user("reader", "researcher")
    for i in range(nodes):
        hub.add_node(f"node{i:02d}", "NL")
    owner = hub.authenticate(token)
    for i in range(studies):
        sid = hub.create_study(
            {"analysis": "count", "by": ["iccc_group"]},
            analysis="count",
            title=f"study {i}",
            nodes=None,
            min_nodes=1,
            timeout=60.0,
            owner=owner,
        )
        hub.set_study_status(sid, "done", result={"n": i})
    hub.sessions.kw["bind"].dispose()
    return token


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'hub.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"ccdp_bench_reads_{os.getpid()}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy")
    if spy is None:
        print("  (py-spy not installed: no profile)")
        return None
    args = [spy, "record", "-p", str(pid), "-d", str(int(seconds) + 1), "-o", str(out), "-f", "raw"]
    return subprocess.Popen([*args, "--nonblocking", "--gil"], stdout=subprocess.DEVNULL)


# ---- the run ---------------------------------------------------------------------------
def run_hub(a: argparse.Namespace, backend: str, tmp: Path, plain: Path | None) -> None:
    label = "asyncio + h11" if plain else "uvicorn auto (uvloop + httptools if installed)"
    tmp.mkdir(exist_ok=True)
    with database(backend, tmp) as url:
        key = tmp / f"{backend}.audit.key"
        token = seed(url, key, a.nodes, a.studies)
        port = free_port()
        cmd = [sys.executable, "-m", "ccdp", "hub", "serve", "--db", url, "--port", str(port)]
        with server([*cmd, "--audit-key", str(key)], port, plain) as pid:
            print(f"hub on {backend}, {label}, pid {pid}:")
            asyncio.run(load(port, pid, "/api/me", token, a.clients, 5))  # warm up
            spy = None
            if a.profile is not None:
                name = a.profile_route.rsplit("/", 1)[-1]
                out = a.profile / f"{backend}{'-plain' if plain else ''}-{name}.folded"
                spy = profile(pid, out, a.profile_seconds)
                until = time.monotonic() + a.profile_seconds
                while time.monotonic() < until:
                    asyncio.run(load(port, pid, a.profile_route, token, a.clients, a.requests))
                if spy is not None:
                    spy.wait()
                    print(f"  profile: {out}")
            for route in ("/api/health", *ROUTES):
                t = token if route != "/api/health" else None
                if a.client == "wrk":
                    print(wrk_load(port, pid, route, t, a.clients, a.seconds, tmp))
                else:
                    print(asyncio.run(load(port, pid, route, t, a.clients, a.requests)).line())


def run_bare(a: argparse.Namespace, tmp: Path, plain: Path | None) -> None:
    port = free_port()
    script = tmp / "bare.py"
    script.write_text(BARE_APP)
    with server([sys.executable, str(script), str(port)], port, plain) as pid:
        asyncio.run(load(port, pid, "/", None, a.clients, 5))
        print(f"bare uvicorn app{' (asyncio + h11)' if plain else ''}, pid {pid}:")
        if a.client == "wrk":
            print(wrk_load(port, pid, "/", None, a.clients, a.seconds, tmp))
            return
        fig = asyncio.run(load(port, pid, "/", None, a.clients, a.requests))
        fig.route = "bare ASGI app"
        print(fig.line())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40, help="GETs per client per route")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    ap.add_argument("--plain-http", action="store_true", help="also asyncio + h11")
    ap.add_argument("--profile", type=Path, help="folder for py-spy flame graphs")
    ap.add_argument("--profile-seconds", type=float, default=10)
    ap.add_argument("--profile-route", choices=ROUTES, default="/api/me")
    ap.add_argument(
        "--client",
        choices=("python", "wrk"),
        default="python",
        help="the load's client: this script's asyncio client, or wrk (apt-get install wrk)",
    )
    ap.add_argument("--seconds", type=float, default=10, help="with --client wrk: per route")
    ap.add_argument("--src", type=Path, help="the hub's source tree (default: this one's src/)")
    a = ap.parse_args()
    backends = a.backend or ["sqlite", "postgres"]
    print(
        f"{a.clients} clients x {a.requests} GETs per route, one keep-alive connection each; "
        f"client and hub share this machine's {os.cpu_count()} cores; hub from {SRC}"
    )
    if a.profile is not None:
        a.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "plain").mkdir()
        (tmp / "plain" / "sitecustomize.py").write_text(NO_FAST_SERVER)
        variants = [None, tmp / "plain"] if a.plain_http else [None]
        for plain in variants:
            run_bare(a, tmp, plain)
            for backend in backends:
                run_hub(a, backend, tmp / f"{backend}{'-plain' if plain else ''}", plain)


if __name__ == "__main__":
    main()

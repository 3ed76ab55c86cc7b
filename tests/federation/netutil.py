"""Loopback plumbing for network tests: free ports, an in-process hub, hub/node subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn

from ccdp.federation.client import tls_verify
from ccdp.federation.hub.app import Hub, create_app
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.runner import StudyExecutor
from ccdp.web.dashboard import mount_dashboard
from ccdp.wire.protocol import Clock, utcnow
from tests.conftest import ROOT, SRC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll `cond` until truthy (bounded); returns its value or raises AssertionError."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_http(url: str, timeout: float = 20.0, verify: bool | str = True) -> None:
    def up() -> bool:
        try:
            ctx = tls_verify(verify) if isinstance(verify, str) else verify
            return httpx.get(url + "/api/health", timeout=1, verify=ctx).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, 0.1)


class LiveServer:
    """A FastAPI app served by uvicorn (real HTTP on loopback) in a thread of the test process:
    the base of the hub's and the linkage service's live servers."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        wait_until(lambda: self.server.started, 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


class LiveHub(LiveServer):
    """A real hub in a thread of the test process."""

    def __init__(
        self,
        db_url: str,
        executor: StudyExecutor,
        port: int | None = None,
        open_studies: bool = True,
        hub_class: type[Hub] = Hub,
        clock: Clock = utcnow,
        **app_options: Any,
    ) -> None:
        """`open_studies` as `ccdp hub serve --open` (most tests run studies without a
        project); `hub_class` lets a test play a hub with other rules (e.g. one that forwards
        every study, to see the node's own project check hold); `clock` the hub's clock (a
        `FakeClock` the test moves, for deadlines and expiry)."""
        self.db_url = db_url
        self.clock = clock
        self.hub = hub_class(open_database(db_url), open_studies=open_studies, clock=clock)
        app = create_app(
            self.hub, executor, poll=0.1, **{"dashboard": mount_dashboard, **app_options}
        )
        super().__init__(app, port)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT), e.get("PYTHONPATH", "")])
    return e


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    """A child python process (new session, so a kill reaches only it), output to `log`."""
    fh = log.open("ab")
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env(),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def processes() -> Iterator[list[subprocess.Popen]]:
    """Collects child processes and stops every one of them, whatever happens in the test."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            kill(p)


def ccdp_args(*args: object) -> list[str]:
    return ["-m", "ccdp", *map(str, args)]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


class HubProcess:
    """`ccdp hub serve` (or another hub entry point) as a child process on a loopback port."""

    def __init__(
        self,
        db_url: str,
        log: Path,
        port: int | None = None,
        args: list[str] | None = None,
        scheme: str = "http",
        verify: bool | str = True,
    ) -> None:
        self.db_url = db_url
        self.log = log
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # --open: most tests run studies without a project (tests/governance/ run closed hubs)
        self.args = args or ccdp_args("hub", "serve", "--db", db_url, "--port", self.port, "--open")
        self.verify = verify
        self.proc: subprocess.Popen | None = None

    def start(self) -> HubProcess:
        self.proc = spawn(self.args, self.log)
        try:
            wait_http(self.url, 30, self.verify)
        except AssertionError:
            kill(self.proc, signal.SIGKILL)
            raise AssertionError(f"hub did not start:\n{self.log.read_text()}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            kill(self.proc, sig)

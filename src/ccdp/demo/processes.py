"""The demo's child processes and how it talks to them: each ccdp command a child of this
process, with the same ccdp on its path and its secrets in its environment (never on its command
line), each long-running service in its own process group, stopped as a whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from ccdp.errors import CcdpError


class DemoError(CcdpError):
    """A step of the demo failed (the message names the step and its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "ccdp", *map(str, args)]


def _env() -> dict[str, str]:
    """Children import the same ccdp as this process, whether installed or run from a tree."""
    import ccdp

    env = dict(os.environ)
    src = str(Path(ccdp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def user_token(token: str) -> dict[str, str]:
    """A person's token for a child command, by environment: argv is visible to every user
    of the machine (`ps`), a process's environment only to its owner."""
    return {"CCDP_TOKEN": token}


def node_token(token: str) -> dict[str, str]:
    """A node's token for a child command, by environment (never on its command line)."""
    return {"CCDP_NODE_TOKEN": token}


class Processes:
    """Child processes of the demo, each in its own session (its own process group), stopped
    in reverse order, each whole group, and waited for."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, args: list[str], log: Path, secrets: dict[str, str] | None = None
    ) -> subprocess.Popen:
        fh = log.open("ab")
        env = {**_env(), **(secrets or {})}
        proc = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        fh.close()
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole process group (it leads its own session): whatever it started
    stops with it."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait_up(url: str, procs: Processes, timeout: float = 60, what: str = "the hub") -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.check()
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise DemoError(f"{what} did not answer at {url} within {timeout:g} s")

"""`ccdp demo --keep-running` stopped by SIGTERM (a service manager, `kill`) or SIGHUP (a closed
terminal) stops every child as Ctrl-C does; no child carries a token on its command line; its
log, piped, says each step once in full."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccdp.demo.partnership import Processes, Stopped, load_studies, stop_on_signals
from tests.conftest import cli_env
from tests.federation.netutil import wait_until


def descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (a child in its own session included)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        if fields[0] != "Z":
            parent[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_sigterm_stops_every_child_and_no_token_is_on_a_command_line(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-browser", "--keep-running", "--patients", "1200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccdp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    lines: list[str] = []
    kids: set[int] = set()
    try:
        assert proc.stdout is not None
        end = time.monotonic() + 900
        while time.monotonic() < end:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if "stops the hub and the node agents" in line:
                break
        text = "".join(lines)
        url = re.search(r"dashboard: (http://127\.0\.0\.1:(\d+))/", text)
        assert url, text
        kids = descendants(proc.pid)
        # the hub, the linkage service (its own process group too) and six node agents
        assert len(kids) >= 8, [cmdline(k) for k in kids]
        assert any(" linkage serve " in cmdline(k) for k in kids), [cmdline(k) for k in kids]
        # tokens by environment: nothing on a command line that `ps` shows every user
        for kid in kids:
            assert "ccdp-node-" not in cmdline(kid) and "ccdp-user-" not in cmdline(kid)
            assert "--token" not in cmdline(kid)
        linkage_logs = [p.name for p in (out / "logs").glob("linkage-*.log")]
        assert len(linkage_logs) == 7  # the service's and each node's `ccdp linkage run`
        for log in ("governance.log", "referral.log", *linkage_logs):  # short-lived argv
            assert "--token" not in (out / "logs" / log).read_text()
        # piped: each step once, in full, never "0/1"
        steps = [ln.split("] ", 1)[1] for ln in lines if ln.startswith("[")]
        assert steps and len(steps) == len(set(steps)), steps
        assert not any(s.rstrip().endswith(("0/1", "1/1")) for s in steps), steps
        for st in load_studies():
            assert any(s.startswith(f"study: {st['spec']['title']}: ") for s in steps), steps

        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        wait_until(lambda: not any(alive(k) for k in kids), 60, 0.2)
        with socket.socket() as s:  # the hub no longer answers
            assert s.connect_ex(("127.0.0.1", int(url.group(2)))) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for kid in kids:  # a failed test leaves nothing behind either
            if alive(kid):
                os.kill(kid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_unwinds_the_demo_like_ctrl_c(sig):
    """The demo's handlers turn SIGTERM and SIGHUP into Stopped (its `finally` stops every
    child); the previous handlers come back afterwards."""
    before = signal.getsignal(sig)
    restore = stop_on_signals()
    try:
        with pytest.raises(Stopped) as caught:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises on the next bytecode; never reached
        assert caught.value.signum == sig
    finally:
        restore()
    assert signal.getsignal(sig) == before


def test_stopping_a_child_stops_what_it_started(tmp_path):
    """Each child leads its own process group; stop() signals the group and waits: a process
    the child started is stopped too."""
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(p.pid, flush=True); time.sleep(600)"
    )
    procs = Processes()
    child = procs.start("child", [sys.executable, "-c", code], tmp_path / "child.log")
    log = tmp_path / "child.log"
    grandchild = int(wait_until(lambda: log.read_text().strip(), 30))
    assert alive(grandchild)
    procs.stop()
    assert child.poll() is not None
    wait_until(lambda: not alive(grandchild), 30)

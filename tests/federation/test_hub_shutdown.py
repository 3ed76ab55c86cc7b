"""`ccdp hub serve` stops on SIGTERM promptly, without tracebacks, even while node agents
hold long-polls open (issue 14).

No fixed sleeps (issue 26): the test waits for the poll to reach the hub (the node's last-seen,
written when its token is checked), and the bound on the shutdown is generous but far below the
poll's own wait, so only a hub that cut the poll short can pass it."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx

from tests.conftest import run_ccdp
from tests.federation.netutil import HubProcess, last_line, wait_until

POLL_WAIT = 60  # the longest long-poll the hub allows
SHUTDOWN_BOUND = 20.0  # generous on a loaded machine, still a third of POLL_WAIT


def node_seen(path) -> bool:
    with sqlite3.connect(path) as conn:
        row = conn.execute("select last_seen from nodes where name = 'fr'").fetchone()
    return row is not None and row[0] is not None


def test_sigterm_with_a_long_poll_open_stops_quickly_and_cleanly(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    token = last_line(run_ccdp("hub", "add-node", "fr", "--country", "FR", "--db", db).stdout)
    hub = HubProcess(db, tmp_path / "hub.log").start()
    answers: list[int] = []

    def long_poll() -> None:
        r = httpx.get(
            f"{hub.url}/api/node/tasks",
            params={"wait": POLL_WAIT},
            headers={"Authorization": f"Bearer {token}"},
            timeout=POLL_WAIT + 30,
        )
        answers.append(r.status_code)

    assert not node_seen(tmp_path / "hub.db")  # add-node leaves last-seen empty
    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    wait_until(lambda: node_seen(tmp_path / "hub.db"), timeout=30)  # the poll reached the hub
    assert hub.proc is not None
    assert not answers  # and is still held open there
    started = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    hub.proc.wait(timeout=POLL_WAIT)
    took = time.monotonic() - started
    poller.join(timeout=30)
    assert not poller.is_alive()
    assert took < SHUTDOWN_BOUND, f"shutdown took {took:.2f} s (the poll waits {POLL_WAIT} s)"
    assert answers == [200]  # the long-poll was answered (no tasks), not cut
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log

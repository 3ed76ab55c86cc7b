"""`ccdp hub serve` stops on SIGTERM within a second, without tracebacks, even while node agents
hold long-polls open (issue 14)."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.conftest import run_ccdp
from tests.federation.netutil import HubProcess, last_line


def test_sigterm_with_a_long_poll_open_stops_quickly_and_cleanly(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    token = last_line(run_ccdp("hub", "add-node", "fr", "--country", "FR", "--db", db).stdout)
    hub = HubProcess(db, tmp_path / "hub.log").start()
    answers: list[int] = []

    def long_poll() -> None:
        r = httpx.get(
            f"{hub.url}/api/node/tasks",
            params={"wait": 30},
            headers={"Authorization": f"Bearer {token}"},
            timeout=40,
        )
        answers.append(r.status_code)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(1.0)  # the poll is now waiting at the hub
    assert hub.proc is not None
    started = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    hub.proc.wait(timeout=10)
    took = time.monotonic() - started
    poller.join(timeout=10)
    assert took < 1.0, f"shutdown took {took:.2f} s"
    assert answers == [200]  # the long-poll was answered (no tasks), not cut
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log

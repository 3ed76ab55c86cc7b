"""`ccdp hub serve` keeps an idle keep-alive connection open past uvicorn's 5 s default (issue 27,
the hub under load): with 5 s, equal to httpx's own pool expiry, the hub closed connections just
as clients reused them, and 0.1-0.5% of requests under load got no answer (ReadError)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from ccdp.federation.hub.server import KEEP_ALIVE
from tests.federation.netutil import HubProcess

IDLE = 6.5  # seconds: past uvicorn's default keep-alive (5 s), well under the hub's


def _get_health(sock: socket.socket) -> bytes:
    """One keep-alive GET on `sock`; the response head and body, or b"" if the hub closed it."""
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return data


def test_an_idle_connection_outlives_the_default_keep_alive_and_is_reused(tmp_path: Path):
    assert KEEP_ALIVE > 60  # longer than a TLS proxy keeps its upstream connections idle
    hub = HubProcess(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub.log").start()
    try:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as sock:
            assert _get_health(sock).startswith(b"HTTP/1.1 200")
            time.sleep(IDLE)  # the idle time is what this test is about
            assert _get_health(sock).startswith(b"HTTP/1.1 200")
    finally:
        hub.stop()

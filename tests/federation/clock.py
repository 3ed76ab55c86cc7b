"""A clock the test moves: deadlines and expiry are seen to pass when it passes them (issue 26).

The hub and the dashboard's session store take a `Clock` (ccdp.wire.protocol); handed this one,
nothing expires until the test calls `advance`, however slow the machine is.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from ccdp.wire.protocol import utcnow


class FakeClock:
    """Stands still at `start` (the real now by default) until `advance` moves it forward."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else utcnow()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0.0, days: int = 0) -> datetime:
        """Move forward (never back) and return the new now."""
        if seconds < 0 or days < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += timedelta(days=days, seconds=seconds)
            return self._now

"""The service's link worker: one thread that links the runs whose uploads are complete, so that
no request waits on a link (the last node's upload returns at once, and nodes follow the run's
state, `linking` then `linked` or `failed`, through the status route).

The worker wakes when an upload completes a run and, in case a wake-up was missed or the
service was stopped mid-link, every `poll` seconds; each time it links every run in state
`linking` (`LinkageService.link_pending`). One worker per service process; several processes
on one database are safe (the run is stored once, under a row lock) but only duplicate work.
"""

from __future__ import annotations

import logging
import threading

from ccdp.federation.linkage.service import LinkageService

log = logging.getLogger("ccdp.linkage.service")


class LinkWorker:
    """Links pending runs in a daemon thread until stopped."""

    def __init__(self, service: LinkageService, poll: float = 5.0) -> None:
        self.service = service
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="linkage-worker", daemon=True)

    def start(self) -> LinkWorker:
        """Start the thread and take the service's wake-ups (a run left `linking` by a stopped
        service is picked up at once)."""
        self.service.notify = self._wake.set
        self._wake.set()
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the run being linked, if any (waits up to `timeout` seconds; the thread
        is a daemon, so a longer link does not hold the process)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.service.link_pending()
            except Exception as exc:  # the database away: log it, try again at the next poll
                # the kind only: a database error's text can quote a statement's parameters
                log.error("linkage worker: %s (retried in %g s)", type(exc).__name__, self.poll)

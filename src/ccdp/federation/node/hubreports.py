"""What the node agent reports to its hub besides answers and catalogues: its disclosure alerts
(each once: alertbox.py keeps what was sent) and the registered studies its custodian accepted
(the node's project record, sent at start and whenever it changes).

Both are read from files beside the store, so a custodian's `ccdp node projects accept` and the
detection thread of a running node reach the board without a restart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ccdp.federation.node import alertbox
from ccdp.federation.node.projects import acceptances, load_decisions, projects_path
from ccdp.wire.alerts import AcceptedStudies, DisclosureAlert


class HubReports:
    """The agent's source of alerts and acceptances for one node store."""

    def __init__(self, store: Path | str) -> None:
        self.store = Path(store)
        self._sent_record: str | None = None

    # -- alerts ----------------------------------------------------------------------------
    def alerts(self) -> list[DisclosureAlert]:
        """The alerts not yet posted, oldest first (cheap when there are none)."""
        if not alertbox.alertbox_path(self.store).exists() and not self._log_exists():
            return []
        return alertbox.unsent(self.store)

    def alert_sent(self, alert: DisclosureAlert, hub: str) -> None:
        """Posted (or refused for good: `hub` says which): never posted again."""
        alertbox.mark_sent(self.store, alert.alert_id, hub)

    def _log_exists(self) -> bool:
        from ccdp.federation.node.audit import audit_path

        return audit_path(self.store).exists()

    # -- accepted studies ------------------------------------------------------------------
    def _record_digest(self) -> str:
        path = projects_path(self.store)
        body = path.read_bytes() if path.exists() else b""
        return hashlib.sha256(body).hexdigest()

    def acceptances(self) -> tuple[AcceptedStudies, str] | None:
        """The node's project decisions to report, with the mark to pass to `acceptances_sent`;
        None when the record is unchanged since it was last sent."""
        mark = self._record_digest()
        if mark == self._sent_record:
            return None
        return acceptances(load_decisions(self.store)), mark

    def acceptances_sent(self, mark: str) -> None:
        self._sent_record = mark


__all__ = ["HubReports"]

"""Detection after each release (issue 28, item 4): the registered-set audit over a project's
released sets, reporting only what the newest sets add; a hit is a `disclosure-alert` in the
node's audit log, queued for the hub's board (alertbox.py; the agent posts it once). Apart from
acceptance.py so that LocalNode can call it without an import circle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.registered_audit import AuditResult, audit
from ccdp.federation.node.alertbox import entries, queue_alert
from ccdp.wire.protocol import utcnow

MAX_DETECT_SETS = 5_000  # beyond this many of a project's released sets, detection is skipped
EARLIER = "earlier releases of this node"


# -- what the node released before ---------------------------------------------------------------
def released_sets(
    ledger: Ledger, project: str | None = None, limit: int | None = None
) -> tuple[list[np.ndarray], list[dict[str, Any]]] | None:
    """The ledger's sets (of one project, when given) as record keys, with their metadata;
    None when there are more than `limit` of them (`Ledger.sets`)."""
    return ledger.sets(project, limit)


# -- after each release --------------------------------------------------------------------------
def detect(
    store: Path | str,
    ledger: Ledger,
    project: str,
    study_id: str,
    min_cell: int,
    limit: int = MAX_DETECT_SETS,
) -> AuditResult | None:
    """Look for isolating combinations that the latest release of `study_id` adds to the
    project's earlier releases; log a `disclosure-alert` (project and studies, never a child)
    when there is one, a `disclosure-detection-skipped` when the project's ledger is too large.
    Returns the result (None when skipped)."""
    from ccdp.federation.node.audit import AuditLog

    got = released_sets(ledger, project, limit)
    log_ = AuditLog.for_store(store)
    if got is None:
        skipped = log_.append(
            {
                "time": utcnow().isoformat(),
                "event": "disclosure-detection-skipped",
                "project": project,
                "reason": f"more than {limit} released sets in the project's ledger",
                "limit": limit,
            }
        )
        queue_alert(store, skipped)
        return None
    sets, metas = got
    labels = [f"study {m.get('study_id')}" for m in metas]
    new = f"study {study_id}"
    if new not in labels:
        return AuditResult()
    result = audit(sets, labels, min_cell, only_with={new})
    if result.findings:
        logged = log_.append(
            {
                "time": utcnow().isoformat(),
                "event": "disclosure-alert",
                "project": project,
                "study_id": study_id,
                "findings": result.summary()["findings"],
                "seconds": round(result.seconds, 3),
            }
        )
        queue_alert(store, logged)
    return result


def alerts(store: Path | str) -> list[dict[str, Any]]:
    """The node's disclosure alerts (and skipped detections), oldest first, each with
    `sent_to_hub`: when it was posted to the hub's board and what the hub said (None: not yet)."""
    from ccdp.federation.node.audit import AuditLog

    kinds = {"disclosure-alert", "disclosure-detection-skipped"}
    rows = [r for r in AuditLog.for_store(store).records() if r.get("event") in kinds]
    if not rows:
        return []
    sent = {e.get("record"): e for e in entries(store)}
    out = []
    for r in rows:
        e = sent.get(r.get("hash")) or {}
        at, hub = e.get("sent_at"), e.get("hub")
        out.append({**r, "sent_to_hub": {"at": at, "hub": hub} if at or hub else None})
    return out


__all__ = ["EARLIER", "alerts", "detect", "released_sets"]

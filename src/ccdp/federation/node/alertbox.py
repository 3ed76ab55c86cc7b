"""The node's record of the disclosure alerts it owes its hub's board (issue 28, item 4).

Detection (detection.py) logs each alert in the node's audit log and queues it here: a small file
beside the store (`<store stem>.alerts.json`), one entry per alert with the alert as the hub will
receive it (`wire.alerts.DisclosureAlert`: project, studies, a range, never a record) and, once
posted, when and what the hub said. The agent posts what is not yet sent and marks it sent, so
each alert reaches the board once; the audit log records the sending too (`disclosure-alert-sent`).

A node whose log holds alerts from before this record existed queues them the first time the
record is opened. Writers take a lock file (detection runs in its own thread, the agent in
another, a command in another process).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ccdp.errors import CcdpError
from ccdp.wire.alerts import MAX_FINDINGS, AlertFinding, DisclosureAlert
from ccdp.wire.protocol import utcnow

# the audit log's events of detection -> the kind of alert the hub receives
ALERT_EVENTS = {
    "disclosure-alert": "isolating-combination",
    "disclosure-detection-skipped": "detection-skipped",
}
STUDY_LABEL = re.compile(r"^study ([A-Za-z0-9_.:-]{1,64})$")


class AlertBoxError(CcdpError):
    """The node's record of alerts for the hub is unreadable."""


def alertbox_path(store: Path | str) -> Path:
    """`<store stem>.alerts.json` beside the store."""
    store = Path(store)
    return store.with_name(f"{store.stem}.alerts.json")


@contextmanager
def _locked(store: Path | str) -> Iterator[Path]:
    path = alertbox_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AlertBoxError(f"{path}: not a valid record of alerts ({exc})") from None
    if not isinstance(rows, list):
        raise AlertBoxError(f"{path}: not a valid record of alerts (not a list)")
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def as_alert(record: dict[str, Any], alert_id: str) -> DisclosureAlert:
    """The alert the hub receives for one audit record of detection: the studies named by id
    (the hub knows their titles), the ranges as logged; ValueError when it cannot be sent (e.g.
    a project named by a local file, whose id is no hub's)."""
    kind = ALERT_EVENTS.get(str(record.get("event")))
    if kind is None:
        raise ValueError(f"not an alert: {record.get('event')!r}")
    findings: list[AlertFinding] = []
    more = 0
    for f in record.get("findings") or []:
        ids, others = [], 0
        for label in f.get("sources") or []:
            m = STUDY_LABEL.match(str(label))
            if m is None:
                others += 1
            elif m.group(1) not in ids:
                ids.append(m.group(1))
        if not ids or len(findings) >= MAX_FINDINGS:
            more += 1
            continue
        findings.append(
            AlertFinding(
                studies=ids, records=f.get("records"), integer=bool(f.get("integer")), others=others
            )
        )
    return DisclosureAlert(
        alert_id=alert_id,
        kind=kind,
        project=record.get("project"),
        study_id=record.get("study_id"),
        findings=findings,
        more=more,
        limit=record.get("limit"),
        detected_at=datetime.fromisoformat(str(record.get("time"))),
    )


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    """One entry of the record for an audit record of detection."""
    alert_id = secrets.token_hex(16)
    entry: dict[str, Any] = {
        "alert_id": alert_id,
        "seq": record.get("seq"),
        "record": record.get("hash"),  # the audit record's own HMAC: a seq restarts with a log
        "sent_at": None,
    }
    try:
        entry["alert"] = as_alert(record, alert_id).model_dump(mode="json")
        entry["hub"] = None
    except (ValueError, ValidationError, TypeError) as exc:
        entry["alert"] = None
        entry["hub"] = f"not sendable: {str(exc).splitlines()[0][:200]}"
    return entry


def _open(store: Path | str, path: Path) -> list[dict[str, Any]]:
    """The record (lock held); the first time, the alerts already in the audit log."""
    if path.exists():
        return _read(path)
    from ccdp.federation.node.audit import AuditLog

    logged = AuditLog.for_store(store).records()
    rows = [_entry(r) for r in logged if r.get("event") in ALERT_EVENTS]
    _write(path, rows)
    return rows


def queue_alert(store: Path | str, record: dict[str, Any]) -> None:
    """Queue the audit record of a detection (as `AuditLog.append` returned it) for the hub."""
    with _locked(store) as path:
        rows = _open(store, path)
        if any(r.get("record") == record.get("hash") for r in rows):
            return  # queued already, when the record was first opened
        rows.append(_entry(record))
        _write(path, rows)


def entries(store: Path | str) -> list[dict[str, Any]]:
    """Every entry: alert_id, the audit record's seq and hash (`record`), the alert (None if
    not sendable), sent_at, hub."""
    with _locked(store) as path:
        return _open(store, path)


def unsent(store: Path | str) -> list[DisclosureAlert]:
    """The alerts not yet posted to the hub, oldest first."""
    return [
        DisclosureAlert.model_validate(e["alert"])
        for e in entries(store)
        if e.get("alert") is not None and e.get("sent_at") is None
    ]


def mark_sent(store: Path | str, alert_id: str, hub: str) -> None:
    """Record that the alert was posted (and what the hub said), here and in the audit log, so
    it is posted once."""
    from ccdp.federation.node.audit import AuditLog

    now = utcnow()
    with _locked(store) as path:
        rows = _open(store, path)
        found = [e for e in rows if e.get("alert_id") == alert_id]
        if not found or found[0].get("sent_at") is not None:
            return
        found[0]["sent_at"], found[0]["hub"] = now.isoformat(), hub[:300]
        _write(path, rows)
    AuditLog.for_store(store).append(
        {
            "time": now.isoformat(),
            "event": "disclosure-alert-sent",
            "alert_id": alert_id,
            "alert_seq": found[0].get("seq"),
            "project": (found[0].get("alert") or {}).get("project"),
            "hub": hub[:300],
        }
    )


__all__ = [
    "AlertBoxError",
    "alertbox_path",
    "as_alert",
    "entries",
    "mark_sent",
    "queue_alert",
    "unsent",
]

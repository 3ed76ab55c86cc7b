"""The quarantine as the data manager sees it: list the rows and why, export them to fix.

An export folder is a native-layout folder: one `<table>.csv` whose field columns hold each value
as the site sent it (after the mapping's value maps and code normalisers; keys pseudonymised
when the export carried direct identifiers). Dates are as written in the source everywhere in a
column (03/05/2010 and 31/02/2012 alike, never a mix with ISO dates); beside a date field that
a mapping read, `_parsed__<field>` holds the ISO date ingest read (empty where it read none).
Then `_`-prefixed columns that ingest ignores: the reasons, and where the row came from (file,
row and the source's own key, so the data manager finds it in her system). `README.txt` in the
folder says the same. Fix the values (in the source system for a mapped export, then ingest it
again with its mapping; or here, with ISO dates, then `ccdp ingest EXPORT_DIR --store S`), and
the entries of the rows now accepted are marked resolved.

Only open entries are exported; resolved ones stay in the store as the history of the fixes.
The source key is node-local: it is written to this export and shown by `quarantine list`, and
nothing that leaves the node reads the quarantine table.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from ccdp.errors import CcdpError
from ccdp.ingest.convert import AS_WRITTEN_PREFIX
from ccdp.ingest.specbase import did_you_mean
from ccdp.model import load_model
from ccdp.store import NodeStore

REASON_COLUMNS = [
    "_source_file",
    "_source_row",
    "_source_key",
    "_key",
    "_edit_ids",
    "_fields",
    "_messages",
]

PARSED_PREFIX = "_parsed__"
README = """Rows that ingest quarantined, one CSV per table (written by `ccdp quarantine export`).

Field columns: each value as the site sent it. Dates are written as in the source, in every row
(a mapped export keeps its own format, e.g. 03/05/2010; a native one has ISO dates).
_parsed__<field>: beside a date field a mapping read, the ISO date ingest read from the value
  (empty: it read none, see _messages).
_source_file, _source_row: where the row is in the site's export; _source_key: its own key.
_key: the row's key in the store; _edit_ids, _fields, _messages: why it was quarantined.
Columns starting with _ are ignored by `ccdp ingest`.
"""

Status = Literal["open", "resolved", "all"]
STATUSES: tuple[str, ...] = ("open", "resolved", "all")
_STATUS_SQL: dict[str, str] = {
    "open": "resolved_at IS NULL",
    "resolved": "resolved_at IS NOT NULL",
    "all": "true",
}


class QuarantineError(CcdpError):
    """A quarantine query asks for something that does not exist (unknown table or status)."""


def _check(table: str | None, status: str) -> None:
    if status not in _STATUS_SQL:
        raise QuarantineError(
            f"unknown quarantine status {status!r}{did_you_mean(status, list(STATUSES))} "
            f"(statuses: {', '.join(STATUSES)})"
        )
    names = load_model().table_names
    if table is not None and table not in names:
        raise QuarantineError(
            f"unknown table {table!r}{did_you_mean(table, names)} (tables: {', '.join(names)})"
        )


def quarantine_counts(store_path: str | Path, table: str | None = None) -> dict[str, int]:
    """How many entries are open (still to fix) and resolved (accepted by a later ingest)."""
    _check(table, "all")
    where = "WHERE table_name = ?" if table else ""
    with NodeStore(store_path, read_only=True) as store:
        open_n, resolved_n = store.con.execute(
            "SELECT count(*) FILTER (WHERE resolved_at IS NULL), "
            f"count(*) FILTER (WHERE resolved_at IS NOT NULL) FROM quarantine {where}",
            [table] if table else [],
        ).fetchall()[0]
    return {"open": int(open_n), "resolved": int(resolved_n)}


def quarantine_rows(
    store_path: str | Path, table: str | None = None, status: Status = "open"
) -> list[dict[str, Any]]:
    """Quarantine entries (open ones unless `status` says otherwise): table, source file, row,
    the source's own key, key, fields, edit ids, messages, reasons (list of {edit_id, severity,
    field, value, message}), raw values, and when and by which ingest an entry was resolved."""
    _check(table, status)
    where = f"WHERE {_STATUS_SQL[status]}" + (" AND table_name = ?" if table else "")
    params = [table] if table else []
    with NodeStore(store_path, read_only=True) as store:
        rows = store.con.execute(
            "SELECT table_name, source_file, source_row, source_key, record_key, fields, "
            "edit_ids, messages, reasons, raw, ingest_id, "
            "strftime(resolved_at, '%Y-%m-%dT%H:%M:%S'), resolved_by "
            f"FROM quarantine {where} ORDER BY table_name, source_file, source_row",
            params,
        ).fetchall()
    return [
        {
            "table": t,
            "source_file": f,
            "source_row": r,
            "source_key": sk,
            "key": k,
            "fields": (fields or "").split(";"),
            "edit_ids": (edits or "").split(";"),
            "messages": (messages or "").split(" | "),
            "reasons": json.loads(reasons or "[]"),
            "raw": json.loads(raw or "{}"),
            "ingest_id": ingest_id,
            "resolved_at": resolved_at,
            "resolved_by": resolved_by,
        }
        for (
            t,
            f,
            r,
            sk,
            k,
            fields,
            edits,
            messages,
            reasons,
            raw,
            ingest_id,
            resolved_at,
            resolved_by,
        ) in rows
    ]


def export_quarantine(store_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the open quarantine entries as native CSVs (raw values + reason and source
    columns), one per table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = quarantine_rows(store_path)
    written: dict[str, Path] = {}
    for table in load_model().table_names:
        mine = [r for r in rows if r["table"] == table]
        if not mine:
            continue
        fields = [f.name for f in load_model().table(table).input_fields]
        read = [f for f in fields if any(AS_WRITTEN_PREFIX + f in r["raw"] for r in mine)]
        path = out / f"{table}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*fields, *(PARSED_PREFIX + f for f in read), *REASON_COLUMNS])
            for r in mine:
                raw = r["raw"]
                writer.writerow(
                    [
                        *(_as_written(raw, f) for f in fields),
                        *(_parsed(raw, f) for f in read),
                        r["source_file"],
                        r["source_row"],
                        r["source_key"] or "",
                        r["key"],
                        ";".join(r["edit_ids"]),
                        ";".join(r["fields"]),
                        " | ".join(r["messages"]),
                    ]
                )
        written[table] = path
    if written:
        (out / "README.txt").write_text(README, encoding="utf-8")
    return written


def _as_written(raw: dict[str, Any], name: str) -> str:
    """The value as the site wrote it: a date the mapping read, in the source's own format."""
    value = raw.get(AS_WRITTEN_PREFIX + name)
    if value is None:
        value = raw.get(name)
    return "" if value is None else str(value)


def _parsed(raw: dict[str, Any], name: str) -> str:
    """The ISO date ingest read: where the mapping read the value as another text, or where
    the site wrote an ISO date that exists; empty where it read none."""
    value = raw.get(name)
    if value is None:
        return ""
    if raw.get(AS_WRITTEN_PREFIX + name) is not None:
        return str(value)
    text = str(value)
    if re.fullmatch(r"\d{4}-\d{2}", text):
        text += "-01"  # a partial date (month precision)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            date.fromisoformat(text)
            return str(value)
    except ValueError:
        pass
    return ""

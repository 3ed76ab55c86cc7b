"""The quarantine as the data manager sees it: list the rows and why, export them to fix.

An export folder is itself a native-layout folder: one `<table>.csv` with the raw values as the
site sent them (after mapping), plus `_`-prefixed reason columns that ingest ignores. Fix the
values, run `ccdp ingest EXPORT_DIR --store S`, and the fixed rows replace their quarantine entries.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ccdp.model import load_model
from ccdp.store import NodeStore

REASON_COLUMNS = ["_source_file", "_source_row", "_key", "_edit_ids", "_fields", "_messages"]


def quarantine_rows(store_path: str | Path, table: str | None = None) -> list[dict[str, Any]]:
    """Every quarantined row: table, source file, row, key, fields, edit ids, messages, reasons
    (list of {edit_id, severity, field, value, message}) and raw values."""
    where = "WHERE table_name = ?" if table else ""
    params = [table] if table else []
    with NodeStore(store_path, read_only=True) as store:
        rows = store.con.execute(
            "SELECT table_name, source_file, source_row, record_key, fields, edit_ids, messages, "
            f"reasons, raw, ingest_id FROM quarantine {where} "
            "ORDER BY table_name, source_file, source_row",
            params,
        ).fetchall()
    return [
        {
            "table": t,
            "source_file": f,
            "source_row": r,
            "key": k,
            "fields": (fields or "").split(";"),
            "edit_ids": (edits or "").split(";"),
            "messages": (messages or "").split(" | "),
            "reasons": json.loads(reasons or "[]"),
            "raw": json.loads(raw or "{}"),
            "ingest_id": ingest_id,
        }
        for t, f, r, k, fields, edits, messages, reasons, raw, ingest_id in rows
    ]


def export_quarantine(store_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the quarantine as native CSVs (raw values + reason columns), one per table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = quarantine_rows(store_path)
    written: dict[str, Path] = {}
    for table in load_model().table_names:
        mine = [r for r in rows if r["table"] == table]
        if not mine:
            continue
        fields = [f.name for f in load_model().table(table).input_fields]
        path = out / f"{table}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*fields, *REASON_COLUMNS])
            for r in mine:
                raw = r["raw"]
                writer.writerow(
                    [
                        *(raw.get(f) if raw.get(f) is not None else "" for f in fields),
                        r["source_file"],
                        r["source_row"],
                        r["key"],
                        ";".join(r["edit_ids"]),
                        ";".join(r["fields"]),
                        " | ".join(r["messages"]),
                    ]
                )
        written[table] = path
    return written

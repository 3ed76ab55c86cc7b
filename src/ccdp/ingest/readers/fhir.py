"""FHIR R4 bundles (JSON, or NDJSON of resources) flattened into one table per resource type.

Each resource becomes a row whose columns are element paths: `gender`, `birthDate`,
`subject.reference`, `code.coding[0].code`. List elements carrying a `system` (codings,
identifiers), a `url` (extensions) or a `use` also get a selector path, so a mapping can say
`bodySite[0].coding[system=http://terminology.hl7.org/CodeSystem/icd-o-3].code` and not depend
on coding order. `_source_row` is the resource's 1-based entry number in the bundle (line number
for NDJSON) and `_fullUrl` the entry's fullUrl, which transaction bundles use as the reference.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ccdp.ingest.readers.base import SOURCE_ROW, ReaderError, ReaderOptions
from ccdp.ingest.readers.delimited import read_text

FULL_URL = "_fullUrl"
_SELECTOR_KEYS = ("system", "url", "use")


def read_fhir(path: Path, opts: ReaderOptions) -> pd.DataFrame:
    """The resources of type `opts.resource` in the file, one row each."""
    tables = read_fhir_resources(path, opts.encoding)
    if opts.resource is None:
        raise ReaderError(
            f"{path}: a FHIR source needs `resource:` (resource types in the file: "
            + ", ".join(tables)
            + ")"
        )
    if opts.resource not in tables:
        raise ReaderError(
            f"{path}: no {opts.resource} resources; resource types in the file: "
            + (", ".join(tables) or "none")
        )
    return tables[opts.resource]


def read_fhir_resources(path: Path, encoding: str = "auto") -> dict[str, pd.DataFrame]:
    """Every resource type in a bundle / NDJSON file as its own flattened frame."""
    text = read_text(path, encoding)
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for number, full_url, resource in _resources(text, path):
        kind = resource.get("resourceType")
        if not isinstance(kind, str):
            raise ReaderError(f"{path}, entry {number}: resource without a resourceType")
        flat: dict[str, Any] = {SOURCE_ROW: number, FULL_URL: full_url}
        _flatten(resource, "", flat)
        rows[kind].append(flat)
    out: dict[str, pd.DataFrame] = {}
    for kind, records in rows.items():
        frame = pd.DataFrame.from_records(records)
        numbers = frame.pop(SOURCE_ROW).to_numpy(dtype=np.int64)
        frame = frame.astype(object).where(frame.notna(), None)
        frame[SOURCE_ROW] = numbers
        out[kind] = frame
    return out


def _resources(text: str, path: Path) -> list[tuple[int, str | None, dict]]:
    """(entry number, fullUrl, resource) for a Bundle, a single resource or NDJSON."""
    stripped = text.lstrip()
    if path.suffix.lower() == ".ndjson" or (stripped.startswith("{") and "}\n{" in stripped):
        out: list[tuple[int, str | None, dict]] = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                out.append((i, None, _loads(line, path, i)))
        return out
    doc = _loads(text, path, None)
    if not isinstance(doc, dict):
        raise ReaderError(f"{path}: expected a FHIR Bundle or resource (a JSON object)")
    if doc.get("resourceType") != "Bundle":
        return [(1, None, doc)]
    entries = doc.get("entry") or []
    found: list[tuple[int, str | None, dict]] = []
    for i, entry in enumerate(entries, start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            found.append((i, entry.get("fullUrl"), resource))
    return found


def _loads(text: str, path: Path, line: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line}" if line is not None else f"line {exc.lineno}, column {exc.colno}"
        hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) - 1 else ""
        raise ReaderError(f"{path}, {where}: invalid JSON: {exc.msg}{hint}") from exc


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    """Write every leaf of `node` into `out` under its path (see module docstring)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _flatten(item, f"{prefix}[{i}]", out)
            if isinstance(item, dict):
                for key in _SELECTOR_KEYS:
                    selector = item.get(key)
                    if isinstance(selector, str):
                        path = f"{prefix}[{key}={selector}]"
                        if not any(k.startswith(path) for k in out if k != path):
                            _flatten(item, path, out)
                        break
    elif node is not None:
        out[prefix] = _leaf_text(node)


def _leaf_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

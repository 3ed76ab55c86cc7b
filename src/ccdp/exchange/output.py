"""Writing an export so that nothing half-written is left and no earlier export is overwritten
by accident.

An export is written into a staging path beside its target and moved into place only when it is
complete. A folder (or file) that already holds an export is replaced only when the custodian
says so (`replace=True`); a folder holding anything that is not a ccdp export is never replaced.
Every export folder carries a manifest (`ccdp-export.json`): what was exported, from which
store, when, by which ccdp, with its counts and warnings.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from ccdp.errors import CcdpError

MANIFEST = "ccdp-export.json"


class ExportError(CcdpError):
    """An export cannot be written (its target, its store or its options)."""


class ExportExistsError(ExportError):
    """The target already holds an export (or other files) and replacing it was not asked for."""


class ExportSummary(BaseModel):
    """What an export wrote: kept as the export's manifest and printed by the command."""

    format: str = Field(description="fhir, omop or phenopackets")
    standard: str = Field(description="The standard and version written, e.g. 'FHIR R4 4.0.1'.")
    profiles: list[str] = Field(default_factory=list, description="Profiles or extensions used.")
    store: str = ""
    out: str = ""
    created: str = ""
    ccdp_version: str = ""
    patients: int = 0
    records: dict[str, int] = Field(
        default_factory=dict, description="Records written, by resource, table or message type."
    )
    notes: list[str] = Field(
        default_factory=list, description="What the reader must know (e.g. concept ids left 0)."
    )
    warnings: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def _is_export(path: Path) -> bool:
    """Does `path` hold a ccdp export (a folder with a manifest, or a file with one beside it)?"""
    if path.is_dir():
        return (path / MANIFEST).is_file()
    return manifest_beside(path).is_file()


def manifest_beside(file: Path) -> Path:
    """The manifest of a single-file export (`cdm.duckdb` → `cdm.duckdb.ccdp-export.json`)."""
    return file.with_name(f"{file.name}.{MANIFEST}")


def check_target(out: Path, replace: bool) -> None:
    """Refuse a target that holds something, unless it is an export and `replace` is set."""
    if not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    if not _is_export(out):
        raise ExportExistsError(
            f"{out} already exists and is not a ccdp export: choose another --out "
            "(ccdp replaces only its own exports)"
        )
    if not replace:
        raise ExportExistsError(
            f"{out} already holds an export: pass --replace to write over it, or choose "
            "another --out"
        )


@contextmanager
def staged(out: Path, replace: bool, *, is_file: bool = False) -> Iterator[Path]:
    """A staging path for an export into `out`, moved into place only when the block ends
    without an error (an error removes it and leaves `out` as it was)."""
    out = out.resolve()
    check_target(out, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.partial-{os.getpid()}")
    _remove(stage)
    if not is_file:
        stage.mkdir()
    try:
        yield stage
    except BaseException:
        _remove(stage)
        _remove(manifest_beside(stage))
        raise
    _remove(out)
    if is_file:
        _remove(manifest_beside(out))
        if manifest_beside(stage).exists():
            os.replace(manifest_beside(stage), manifest_beside(out))
    os.replace(stage, out)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_manifest(target: Path, summary: ExportSummary, *, is_file: bool = False) -> Path:
    """Write `summary` as the export's manifest (in the folder, or beside a single file)."""
    from ccdp import __version__

    summary.created = summary.created or datetime.now(UTC).isoformat(timespec="seconds")
    summary.ccdp_version = summary.ccdp_version or str(__version__)
    path = manifest_beside(target) if is_file else target / MANIFEST
    path.write_text(json.dumps(summary.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path

"""FHIR R4 (PanCareSurPass 1.0.0 and mCODE STU4 profiles): the model to Bundles and back.

Placeholder: being written (issue 24)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ccdp.exchange.output import ExportSummary
from ccdp.ingest.pipeline import IngestReport
from ccdp.store import NodeStore


def export_store(
    store: NodeStore, out: Path, *, progress: Callable[[int], None] | None = None
) -> ExportSummary:
    """Write one Bundle per patient of `store` into the folder `out`."""
    raise NotImplementedError


def import_bundles(source: Path, store: Path, *, progress: bool = True) -> IngestReport:
    """Ingest Bundles from `source` into `store`, returning the ingest report."""
    raise NotImplementedError

"""OMOP CDM 5.4 with the Oncology extension: the model to a CDM database.

Placeholder: being written (issue 24)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ccdp.exchange.output import ExportSummary
from ccdp.store import NodeStore


def export_store(
    store: NodeStore,
    out: Path,
    *,
    vocab: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the CDM tables for every patient of `store` into the DuckDB file `out`."""
    raise NotImplementedError

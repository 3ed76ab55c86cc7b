"""GA4GH Phenopackets v2: one Phenopacket per patient.

Placeholder: being written (issue 24)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ccdp.exchange.output import ExportSummary
from ccdp.store import NodeStore


def export_store(
    store: NodeStore, out: Path, *, progress: Callable[[int], None] | None = None
) -> ExportSummary:
    """Write one Phenopacket (JSON) per patient of `store` into the folder `out`."""
    raise NotImplementedError

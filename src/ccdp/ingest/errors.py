"""Errors raised while reading and ingesting a site's export."""

from __future__ import annotations

from ccdp.errors import CcdpError


class IngestError(CcdpError):
    """The source cannot be ingested as a whole (unreadable file, unknown table or column)."""

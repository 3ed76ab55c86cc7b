"""Errors raised by the node store."""

from __future__ import annotations

from ccdp.errors import CcdpError


class StoreError(CcdpError):
    """The node store cannot be opened or written (missing file, not a ccdp store, locked)."""


class StoreVersionError(StoreError):
    """The store's schema version does not match what this code understands."""

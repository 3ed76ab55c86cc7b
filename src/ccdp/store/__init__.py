"""The node's DuckDB store: create from the data model, migrate, write in transactions, read.

`NodeStore` is loaded at its first use: the hub imports `ccdp.store.files` (its audit head
file) and starts without pandas and DuckDB, which it never needs for a store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccdp.store.errors import StoreError, StoreVersionError

if TYPE_CHECKING:
    from ccdp.store.node_store import NodeStore

__all__ = ["NodeStore", "StoreError", "StoreVersionError"]


def __getattr__(name: str) -> Any:
    if name == "NodeStore":
        from ccdp.store.node_store import NodeStore

        return NodeStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The node's DuckDB store: create from the data model, migrate, write in transactions, read."""

from ccdp.store.errors import StoreError, StoreVersionError
from ccdp.store.node_store import NodeStore

__all__ = ["NodeStore", "StoreError", "StoreVersionError"]

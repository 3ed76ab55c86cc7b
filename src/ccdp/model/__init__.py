"""The common data model: tables, fields, types and allowed values (one source of truth)."""

from ccdp.model.schema import FieldDef, Model, TableDef, load_model

__all__ = ["FieldDef", "Model", "TableDef", "load_model"]

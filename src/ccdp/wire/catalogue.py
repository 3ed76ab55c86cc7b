"""The node catalogue as it travels: what a node publishes of itself (the partnership's
resource map), validated on receipt at the hub.

The node computes it (`ccdp.federation.node.catalogue`), through its disclosure gate: every count
is a cell, `null` with `suppressed: true` when the gate withheld it. The top-level keys are fixed:
the dashboard and `GET /api/catalogues` readers rely on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = 200  # longest name or label a catalogue carries
MANY = 500  # most entries of one list (tables, fields, levels, specimen types, edits)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cell(_Strict):
    """A released count, or `null` with `suppressed: true`."""

    count: int | None = Field(None, ge=0, le=2**62)
    suppressed: bool

    @model_validator(mode="after")
    def _one_of(self) -> Cell:
        if (self.count is None) != self.suppressed:
            raise ValueError("a cell is either a count or suppressed (count null)")
        return self


class LevelCell(Cell):
    """A count of one declared level (an ICCC-3 group, a sex, an age group)."""

    level: str = Field(max_length=NAME)
    label: str = Field(max_length=NAME)


class SpecimenCell(Cell):
    type: str = Field(max_length=NAME)


class FieldInfo(_Strict):
    name: str = Field(max_length=NAME)
    completeness: float | None = Field(None, ge=0, le=100, description="% of rows filled")


class TableInfo(_Strict):
    name: str = Field(max_length=NAME)
    rows: int | None = Field(None, ge=0, le=2**62)
    suppressed: bool
    fields: list[FieldInfo] = Field(default_factory=list, max_length=MANY)


class YearRange(_Strict):
    """First and last diagnosis years holding at least min_cell tumours."""

    first: int | None = Field(None, ge=1800, le=3000)
    last: int | None = Field(None, ge=1800, le=3000)


class FollowUp(_Strict):
    median_years: float | None = Field(None, ge=0, le=200)
    method: Literal["reverse Kaplan-Meier"] = "reverse Kaplan-Meier"
    released: bool


class PolicyInfo(BaseModel):
    """The node's policy as published (thresholds, allowed analyses, consent basis, ...)."""

    model_config = ConfigDict(extra="allow")

    min_cell: int = Field(ge=1)
    min_cohort: int = Field(ge=1)
    release: Literal["automatic", "manual"]
    consent: Literal["required", "statutory"]
    allowed_analyses: list[str] | None = Field(None, max_length=MANY)
    require_project: bool


class Quality(_Strict):
    score: float | None = Field(None, ge=0, le=100)
    edits: dict[str, Any] = Field(default_factory=dict)


class Catalogue(_Strict):
    """One node's catalogue (see docs/catalogue.md)."""

    node: str = Field(min_length=1, max_length=100)
    country: str | None = Field(None, max_length=2)
    generated_at: datetime
    last_ingest: datetime | None = None
    policy: PolicyInfo
    patients: Cell
    tumours: Cell
    tables: list[TableInfo] = Field(max_length=MANY)
    diagnosis_years: YearRange
    by_iccc_group: list[LevelCell] = Field(max_length=MANY)
    by_sex: list[LevelCell] = Field(max_length=MANY)
    by_age_group: list[LevelCell] = Field(max_length=MANY)
    # children by sex, vital_status, iccc_group, age_group (the others count tumours); empty in a
    # catalogue published before this key existed
    patients_by: dict[str, list[LevelCell]] = Field(default_factory=dict, max_length=20)
    follow_up: FollowUp
    specimens: list[SpecimenCell] = Field(max_length=MANY)
    quality: Quality

    def headline(self) -> dict[str, Any]:
        """What `GET /api/nodes` shows of it: patients and the last ingest."""
        return {
            "patients": self.patients.count,
            "last_ingest": self.last_ingest.isoformat() if self.last_ingest else None,
            "generated_at": self.generated_at.isoformat(),
        }


TOP_LEVEL_KEYS = tuple(Catalogue.model_fields)

__all__ = ["TOP_LEVEL_KEYS", "Catalogue", "Cell", "LevelCell"]

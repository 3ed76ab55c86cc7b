"""What a node tells its hub's board about its own disclosure safety (issue 28, item 4), and
which registered studies its custodian accepted: shapes and bounds only.

A disclosure alert names a project, the studies whose released sets combine, and how many
records a combination isolates as the range the policy protects ("1–4"), never the exact
number, a record, a key or a value. Every field is an identifier of a fixed pattern, a range, a
flag, a small count or a time: there is no free text in which a node (or whoever holds its token)
could put a child. The hub fills in the studies' titles from its own records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_FINDINGS = 50  # per alert: the rest is counted in `more`
MAX_STUDIES = 50  # per finding
MAX_PROJECTS = 500  # per report of accepted studies
MAX_HASHES = 500  # per project (a protocol of registered studies)

# hub study ids and project ids are uuid hex; a node's local runs use short names too
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
StudyHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# "1–4": the range from 1 to min_cell − 1, never the number a combination isolates
RecordsRange = Annotated[str, Field(pattern=r"^1–[1-9][0-9]{0,3}$")]


class AlertFinding(BaseModel):
    """One combination of released sets that isolates a few records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    studies: list[Ident] = Field(min_length=1, max_length=MAX_STUDIES)
    records: RecordsRange
    integer: bool  # integer coefficients suffice (otherwise a fractional combination does)
    others: int = Field(0, ge=0, le=10_000, description="sources that are not studies")


class DisclosureAlert(BaseModel):
    """One alert of a node's detection, as posted to `POST /api/node/alerts`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str = Field(
        min_length=16,
        max_length=64,
        pattern=r"^[0-9a-f]+$",
        description="the node's own random id of the alert (the hub keeps one per id)",
    )
    kind: Literal["isolating-combination", "detection-skipped"]
    project: Ident
    study_id: Ident | None = Field(None, description="the release after which it was found")
    findings: list[AlertFinding] = Field(default_factory=list, max_length=MAX_FINDINGS)
    more: int = Field(0, ge=0, le=1_000_000, description="findings beyond those listed")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="skipped: sets over this")
    detected_at: datetime

    @model_validator(mode="after")
    def _kind_fits(self) -> DisclosureAlert:
        if self.kind == "isolating-combination" and not self.findings:
            raise ValueError("an isolating-combination alert names at least one finding")
        if self.kind == "detection-skipped" and (self.findings or self.more):
            raise ValueError("a detection-skipped alert names no finding")
        if self.detected_at.tzinfo is None:
            raise ValueError("detected_at: give a time zone (UTC)")
        return self


class ProjectAcceptance(BaseModel):
    """One project as the node's custodian decided it, with the hashes of the registered
    studies accepted (none when declined)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: Ident
    decision: Literal["accepted", "declined"]
    studies: list[StudyHash] = Field(default_factory=list, max_length=MAX_HASHES)
    decided_at: datetime

    @model_validator(mode="after")
    def _declined_accepts_nothing(self) -> ProjectAcceptance:
        if self.decision == "declined" and self.studies:
            raise ValueError("a declined project has no accepted studies")
        if len(set(self.studies)) != len(self.studies):
            raise ValueError("studies: a hash is listed twice")
        return self


class AcceptedStudies(BaseModel):
    """Every project decision the node holds, as `PUT /api/node/accepted-studies` carries it:
    the node's record, reported whole (the hub replaces what it held for the node)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    projects: list[ProjectAcceptance] = Field(default_factory=list, max_length=MAX_PROJECTS)

    @model_validator(mode="after")
    def _one_per_project(self) -> AcceptedStudies:
        ids = [p.project_id for p in self.projects]
        if len(set(ids)) != len(ids):
            raise ValueError("projects: a project is listed twice")
        return self


__all__ = [
    "AcceptedStudies",
    "AlertFinding",
    "DisclosureAlert",
    "ProjectAcceptance",
]

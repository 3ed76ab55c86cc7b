"""A project's declared data use, in GA4GH DUO terms: what the consent of each child must permit.

One definition, used by project files (the board reviews it), study specs (`ccdp run` checks a
project's effect locally), tasks (the node filters its cohort by it) and the node's consent check.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# DUO modifiers whose requirement a project can meet (the board checks the evidence): COL
# collaboration with the primary investigators, IRB ethics approval, PUB publication of results,
# GS within the geographic restriction, MOR the publication moratorium accepted, RTN derived data
# returned, US/IS/PS approved user/institution/project, RS research-specific restriction, TS time
# limit respected. A consent carrying one of them permits only a project that declares it met.
Requirement = Literal["COL", "IRB", "PUB", "GS", "MOR", "RTN", "US", "IS", "PS", "RS", "TS"]


class DataUse(BaseModel):
    """The purpose of a project: a DUO permission (GRU ⊃ HMB ⊃ DS), the disease for DS (a MONDO
    term), and whether the use is commercial."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    permission: Literal["GRU", "HMB", "DS"] = Field(
        description="GRU general research use, HMB health/medical/biomedical, DS disease specific"
    )
    disease: str | None = Field(
        None, pattern=r"^MONDO:\d{7}$", description="The disease studied (MONDO), for DS"
    )
    commercial: bool = Field(False, description="A commercial (or for-profit) purpose")
    meets: tuple[Requirement, ...] = Field(
        (),
        description="DUO modifier requirements the project meets (e.g. [IRB, PUB]): consent "
        "carrying such a modifier permits the project only when it is listed here",
    )

    @model_validator(mode="after")
    def _disease_with_ds(self) -> DataUse:
        """DS is research on one disease: it needs the disease, and only DS names one."""
        if self.permission == "DS" and self.disease is None:
            raise ValueError("permission DS needs the disease studied (e.g. MONDO:0004992)")
        if self.permission != "DS" and self.disease is not None:
            raise ValueError(f"a disease is named only with permission DS, not {self.permission}")
        return self

"""Projects (access requests): the file a researcher submits, the terms a custodian accepts, and
the one check of a study against those terms, run by the hub before any node is asked and by the
node again against its own record (so a compromised hub can neither open a node nor loosen a use).
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from ccdp.cohort.spec import CohortError, CohortSpec, Range
from ccdp.errors import SpecError
from ccdp.governance.registered import RegisteredStudy, split_study, study_hashes
from ccdp.specfile import first_error, read_spec
from ccdp.wire.data_use import DataUse

ProjectState = Literal["requested", "approved", "rejected", "expired", "closed"]
NodeDecision = Literal["accepted", "declined"]


class ProjectError(SpecError):
    """A project file is invalid (the message names the file and the key path)."""


class ProjectSpec(BaseModel):
    """What a researcher asks for; the board reviews exactly this and each custodian accepts it."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300, description="Short title of the project.")
    summary: str = Field(min_length=1, description="Lay summary, for the board and custodians.")
    institution: str = Field(min_length=1, description="The requester's institution.")
    data_use: DataUse = Field(description="The declared use in GA4GH DUO terms.")
    nodes: list[str] = Field(min_length=1, description="The nodes asked to take part.")
    analyses: list[str] = Field(min_length=1, description="The analyses the project may run.")
    cohort: dict[str, Any] | None = Field(
        None, description="Optional scope: every study of the project is restricted to it."
    )
    expires: date = Field(description="After this day no study of the project runs.")
    studies: list[RegisteredStudy] = Field(
        default_factory=list,
        description="The protocol's registered studies (whole study specs): a node answers "
        "these exactly once its custodian accepted them; any other study waits for review "
        "where the node's policy says so (`exact_release`).",
    )

    @field_validator("nodes", "analyses")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        """A name given twice is a typo waiting to mislead a reviewer."""
        twice = sorted({x for x in v if v.count(x) > 1})
        if twice:
            raise ValueError(f"named more than once: {', '.join(twice)}")
        return v

    @field_validator("analyses")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        """An unknown analysis could never run: the board would approve nothing."""
        from ccdp.analyses.registry import names

        unknown = [a for a in v if a not in names()]
        if unknown:
            raise ValueError(f"unknown analyses {unknown}; registered: {', '.join(names())}")
        return v

    @field_validator("cohort")
    @classmethod
    def _valid_scope(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """The scope is a cohort spec (same variables, same value rules), kept as its JSON."""
        if v is None:
            return None
        try:
            return CohortSpec.load(v).to_json()
        except CohortError as exc:
            raise ValueError(str(exc).removeprefix("cohort: ")) from None

    @model_validator(mode="after")
    def _studies_within(self) -> ProjectSpec:
        """A registered study outside the project's own terms could never run, and one listed
        twice would be approved twice under two titles."""
        seen: dict[str, int] = {}
        for i, (spec, h) in enumerate(
            zip(self.study_specs(), study_hashes(self.study_specs()), strict=True)
        ):
            analysis, _, cohort = split_study(spec)
            if analysis not in self.analyses:
                raise ValueError(
                    f"studies[{i}].analysis: {analysis!r} is not one of the project's analyses"
                )
            why = cohort_outside(cohort, self.cohort)
            if why is not None:
                raise ValueError(f"studies[{i}].{why}")
            if h in seen:
                raise ValueError(f"studies[{i}]: the same study as studies[{seen[h]}]")
            seen[h] = i
        return self

    @field_serializer("studies")
    def _as_written(self, studies: list[RegisteredStudy]) -> list[dict[str, Any]]:
        """The studies as the researcher wrote them (what the board and custodians read)."""
        return [s.spec() for s in studies]

    def study_specs(self) -> list[dict[str, Any]]:
        return [s.spec() for s in self.studies]


def _located(exc: ValidationError) -> str:
    """The first error as `key.path: message`, a registered study's key as `studies[i].key`."""
    text = first_error(exc, count_more=True)
    loc = exc.errors()[0]["loc"]
    if len(loc) >= 2 and loc[0] == "studies" and isinstance(loc[1], int):
        rest = text.removeprefix(f"studies.{loc[1]}")
        if re.match(r"^: \S+: ", rest):  # the study's own key, named by its check
            rest = "." + rest.removeprefix(": ")
        return f"studies[{loc[1]}]{rest}"
    return text


def load_project(source: Path | str | dict[str, Any]) -> ProjectSpec:
    """A ProjectSpec from a YAML/JSON file or a dict; ProjectError names the file and key path."""
    raw, where = read_spec(source, "project file", "title, summary", ProjectError)
    try:
        return ProjectSpec.model_validate(raw)
    except ValidationError as exc:
        raise ProjectError(f"{where}: {_located(exc)}") from None


class ProjectTerms(BaseModel):
    """What a custodian accepts and the node keeps: the project's id and every term a study of
    it is checked against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    data_use: DataUse
    analyses: list[str]
    cohort: dict[str, Any] | None = None
    expires: date
    nodes: list[str]
    studies: list[str] = Field(
        default_factory=list,
        description="SHA-256 of each registered study's canonical form (governance/registered),"
        " computed from the studies themselves by whoever builds the terms (the node: its own).",
    )

    @classmethod
    def of(cls, project_id: str, spec: ProjectSpec) -> ProjectTerms:
        return cls(
            id=project_id,
            data_use=spec.data_use,
            analyses=spec.analyses,
            cohort=spec.cohort,
            expires=spec.expires,
            nodes=spec.nodes,
            studies=study_hashes(spec.study_specs()),
        )


# -- is a study within its project? -----------------------------------------------------------
def _le(a: Any, b: Any) -> bool:
    """a <= b for two values of one variable (typed alike by CohortSpec); unlike types: no."""
    try:
        return bool(a <= b)
    except TypeError:
        return False


def _values_within(cond: Any, scope: Any) -> bool:
    """Does every row selected by `cond` also satisfy `scope` (one variable's condition)?"""
    if isinstance(scope, Range):
        lo, hi = scope.from_, scope.to
        if isinstance(cond, Range):
            lo_ok = lo is None or (cond.from_ is not None and _le(lo, cond.from_))
            hi_ok = hi is None or (cond.to is not None and _le(cond.to, hi))
            return lo_ok and hi_ok
        values = cond if isinstance(cond, list) else [cond]
        return all(
            v is not None and (lo is None or _le(lo, v)) and (hi is None or _le(v, hi))
            for v in values
        )
    if isinstance(cond, Range):
        return False  # a range is never inside a list of values
    allowed = scope if isinstance(scope, list) else [scope]
    values = cond if isinstance(cond, list) else [cond]
    return all(v in allowed for v in values)


def cohort_outside(cohort: dict[str, Any] | None, scope: dict[str, Any] | None) -> str | None:
    """Why `cohort` is not within `scope`, or None. Strict: every scope variable must appear in
    the study's cohort with values (or a range) inside the scope's, so the study's own spec shows
    the restriction (the hub does not silently narrow a study's cohort for it)."""
    if not scope:
        return None
    study = CohortSpec.load(cohort).root
    for name, cond in CohortSpec.load(scope).root.items():
        shown = json.dumps(CohortSpec.load({name: cond}).to_json()[name], default=str)
        if name not in study:
            return f"cohort: {name} must be restricted to the project's scope ({shown})"
        if not _values_within(study[name], cond):
            return f"cohort: {name} goes beyond the project's scope ({shown})"
    return None


def study_outside(
    terms: ProjectTerms, analysis: str, cohort: dict[str, Any] | None, today: date
) -> tuple[str, str] | None:
    """(which term, why) a study breaks its project's terms, or None: expiry, analysis, scope."""
    if today > terms.expires:
        return "expires", f"project {terms.id} expired on {terms.expires.isoformat()}"
    if analysis not in terms.analyses:
        return "analyses", (
            f"analysis {analysis!r} is not allowed by project {terms.id} "
            f"(allowed: {', '.join(terms.analyses)})"
        )
    why = cohort_outside(cohort, terms.cohort)
    if why is not None:
        return "cohort", f"project {terms.id}: {why}"
    return None

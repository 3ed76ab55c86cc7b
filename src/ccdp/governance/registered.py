"""Registered studies: the studies a project's protocol lists, and the one canonical hash by which
a node knows a task is one of them.

A node releases a study exactly, without its custodian's review, only when the task it runs is
a study the board approved and its custodian accepted (docs/governance.md, issue 28). The node
computes the hash itself from what it will actually run (analysis, parameters, cohort), never
from a hash the hub sends. The canonical form keeps exactly what changes the release and drops
what does not: the title and description, the nodes asked, `min_nodes`, the timeout, the project
id (not known when the protocol is written) and the data use (checked against the project's own
terms separately); key order, the order of a cohort's list of values, and the analysis's
defaults (made explicit through its `params_model`).

Pure: used by the hub (showing a project) and the node (checking a task) alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ccdp.analyses import registry
from ccdp.cohort.spec import CohortError, CohortSpec
from ccdp.specfile import first_error
from ccdp.wire.data_use import DataUse

# Study-spec keys that never change what a node releases (federation/study.py: STUDY_KEYS are
# these, with `cohort` and `analysis`; a test keeps the two in step).
NOT_RELEASED_KEYS = (
    "title",
    "description",
    "nodes",
    "min_nodes",
    "timeout",
    "project",
    "data_use",
)
STUDY_LEVEL_KEYS = ("cohort", "analysis", *NOT_RELEASED_KEYS)


class RegisteredStudyError(ValueError):
    """A registered study is not a valid study spec (the message names the key)."""


def _canonical_value(value: Any) -> Any:
    """A cohort condition with its list of values in one order (a list is a set of levels)."""
    if isinstance(value, list):
        unique = {json.dumps(v, sort_keys=True, default=str): v for v in value}
        return [unique[k] for k in sorted(unique)]
    return value


def canonical_study(
    analysis: str, params: dict[str, Any] | None, cohort: dict[str, Any] | None
) -> dict[str, Any]:
    """What a study releases, as plain JSON: the analysis, its every parameter (defaults made
    explicit) and its cohort (typed as the cohort spec types it, lists of values sorted).
    RegisteredStudyError if the analysis, a parameter or the cohort is invalid."""
    if analysis not in registry.names():
        raise RegisteredStudyError(
            f"analysis: unknown analysis {analysis!r}; available: {', '.join(registry.names())}"
        )
    model = registry.get(analysis).params_model
    try:
        parsed = model.model_validate(params or {})
    except ValidationError as exc:
        raise RegisteredStudyError(first_error(exc)) from None
    try:
        rows = CohortSpec.load(cohort).to_json()
    except CohortError as exc:
        raise RegisteredStudyError(str(exc)) from None
    return {
        "analysis": analysis,
        "params": parsed.model_dump(mode="json"),
        "cohort": {k: _canonical_value(rows[k]) for k in sorted(rows)},
    }


def study_hash(analysis: str, params: dict[str, Any] | None, cohort: dict[str, Any] | None) -> str:
    """SHA-256 (hex) of the canonical form: equal exactly when two studies release the same."""
    body = json.dumps(
        canonical_study(analysis, params, cohort),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def split_study(raw: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(analysis, parameters, cohort) of a study spec as written: every key that is not a
    study-level key is a parameter (as in a study spec); a parameter given as null is unset."""
    params = {k: v for k, v in raw.items() if k not in STUDY_LEVEL_KEYS and v is not None}
    return str(raw.get("analysis")), params, raw.get("cohort")


class RegisteredStudy(BaseModel):
    """One study of a project's protocol, written as a study spec (`ccdp submit` takes the same
    file). The study-level keys are checked for their type here; the analysis, its parameters
    and the cohort by the canonical form, so that errors name the key."""

    model_config = ConfigDict(extra="allow")

    title: str = "untitled study"
    description: str | None = None
    analysis: str
    cohort: dict[str, Any] | None = None
    nodes: list[str] | None = None
    min_nodes: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0, le=86_400)
    project: str | None = None
    data_use: DataUse | None = None

    @model_validator(mode="after")
    def _releases_something_valid(self) -> RegisteredStudy:
        """An invalid study could never run: the board would approve nothing."""
        analysis, params, cohort = split_study(self.spec())
        try:
            canonical = canonical_study(analysis, params, cohort)
            registry.get(analysis).check_request(
                registry.get(analysis).params_model.model_validate(canonical["params"]),
                set(canonical["cohort"]),
            )
        except (RegisteredStudyError, CohortError) as exc:
            raise ValueError(str(exc)) from None
        return self

    def spec(self) -> dict[str, Any]:
        """The study as written (what the board and custodians read)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @property
    def hash(self) -> str:
        return study_hash(*split_study(self.spec()))


def study_hashes(studies: list[dict[str, Any]]) -> list[str]:
    """The hashes of a protocol's studies, in its order (each study valid, as a project's are)."""
    return [RegisteredStudy.model_validate(s).hash for s in studies]

"""Study spec (YAML/JSON) and the runner that drives it over any transport.

A spec names an analysis, its cohort and its parameters (`by`, `outcome`, `covariates`, ...: any
key that is not a study-level key is a parameter of the analysis, validated by the analysis's own
parameter model so that errors name the offending key).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ccdp.analyses import registry
from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult
from ccdp.cohort.spec import CohortError, CohortSpec
from ccdp.disclosure.consent_note import SET_ASIDE_HEAD, NoteCount, read_note
from ccdp.errors import CcdpError, SpecError
from ccdp.federation.coordinator import drive
from ccdp.governance.projects import ProjectSpec, load_project
from ccdp.governance.registered import study_hash
from ccdp.specfile import first_error, load_spec
from ccdp.wire.data_use import DataUse
from ccdp.wire.errors import MalformedSummary
from ccdp.wire.protocol import Answer, Task, Transport
from ccdp.wire.summary import Summary

STUDY_KEYS = (
    "title",
    "description",
    "cohort",
    "analysis",
    "nodes",
    "min_nodes",
    "timeout",
    "project",
    "data_use",
)


class StudyError(CcdpError):
    """A study could not be completed (too few nodes answered, a node dropped out mid-way)."""


class StudySpec(BaseModel):
    """One study: the question asked of every node."""

    model_config = ConfigDict(extra="allow")

    title: str = "untitled study"
    description: str | None = None
    cohort: CohortSpec | None = None
    analysis: str
    outcome: str | None = None
    by: list[str] | None = None
    covariates: list[str] | None = None
    strata: str | list[str] | None = None
    ties: str | None = None
    nodes: list[str] | None = Field(None, description="Nodes to ask (default: every node).")
    min_nodes: int | None = Field(
        None, ge=1, description="Fewest answering nodes for a result (default: every node named)."
    )
    timeout: float | None = Field(
        None, gt=0, le=86_400, description="Seconds to wait per round (network; at most a day)."
    )
    project: str | None = Field(None, description="The approved project the study belongs to.")
    data_use: DataUse | None = Field(
        None, description="Declared data use (DUO): in `ccdp run`, a project's consent filter."
    )

    @field_validator("nodes")
    @classmethod
    def _distinct_nodes(cls, v: list[str] | None) -> list[str] | None:
        """A node named twice could never complete the study's rounds."""
        if v is not None and len(set(v)) != len(v):
            twice = sorted({n for n in v if v.count(n) > 1})
            raise ValueError(f"named more than once: {', '.join(twice)}")
        return v

    @model_validator(mode="after")
    def _params_valid(self) -> StudySpec:
        analysis = registry.get(self.analysis) if self.analysis in registry.names() else None
        if analysis is None:
            raise ValueError(
                f"analysis: unknown analysis {self.analysis!r}; available: "
                f"{', '.join(registry.names())}"
            )
        try:
            analysis.params_model.model_validate(self.params)
        except ValidationError as exc:
            raise ValueError(first_error(exc)) from None
        try:
            analysis.check_request(
                analysis.params_model.model_validate(self.params),
                set(self.cohort.root) if self.cohort is not None else set(),
            )
        except CohortError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The analysis parameters: every key given that is not a study-level key."""
        given = self.model_dump(exclude_unset=True, exclude=set(STUDY_KEYS))
        return {k: v for k, v in given.items() if v is not None}

    def parsed_params(self) -> AnalysisParams:
        return registry.get(self.analysis).params_model.model_validate(self.params)

    def cohort_json(self) -> dict[str, Any] | None:
        return self.cohort.to_json() if self.cohort is not None else None


def load_study(source: Path | str | dict[str, Any] | StudySpec) -> StudySpec:
    """A StudySpec from a YAML/JSON file, a dict or a spec; SpecError names the offending key."""
    if isinstance(source, StudySpec):
        return source
    return load_spec(source, StudySpec, "study spec", "title, analysis", SpecError)


def registered_hashes(
    spec: StudySpec, project: ProjectSpec | dict[str, Any] | Path | str
) -> frozenset[str]:
    """The study hashes a local run registers (`ccdp run --project FILE`): the project's
    registered studies, once `spec` is one of them, as a node checks a hub's task; a study the
    protocol does not list is refused here, as a node would hold it for review."""
    proj = project if isinstance(project, ProjectSpec) else load_project(project)
    hashes = frozenset(s.hash for s in proj.studies)
    if study_hash(spec.analysis, spec.params, spec.cohort_json()) not in hashes:
        titles = "; ".join(s.title for s in proj.studies)
        raise SpecError(
            f"study {spec.title!r} is not one of the registered studies of project "
            f"{proj.title!r} (they are: {titles or 'none'}); a registered study is run exactly as "
            "the protocol writes it: the same analysis, parameters and cohort"
        )
    return hashes


class NodeStatus(BaseModel):
    """How one node took part: answered, refused (with the reason) or failed; or, for a study of
    a project, kept out by it: `declined` by the node's custodian, or `not accepted` (yet)."""

    status: Literal["answered", "refused", "failed", "declined", "not accepted"]
    reason: str | None = None


class StudyResult(BaseModel):
    """A study's outcome: the pooled result and every node's status."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    study_id: str
    title: str
    analysis: str
    nodes: dict[str, NodeStatus]
    result: AnalysisResult | None = None
    rounds: int = 0
    error: str | None = None
    min_nodes: int = 1
    # whether the nodes left out the linked duplicates another node counts (docs/dedup.md);
    # None: not said (a specimen count, or a result read back from before `dedup` existed)
    dedup: bool | None = None

    def set_aside(self) -> dict[str, NoteCount]:
        """Per answering node that holds link groups, how many linked duplicates `dedup` set
        aside there, as its gate released the count (exact, perturbed, or withheld)."""
        out = {}
        for name, status in self.nodes.items():
            note = read_note(status.reason, SET_ASIDE_HEAD) if status.status == "answered" else None
            if note is not None:
                out[name] = note
        return out

    def dedup_json(self) -> dict[str, Any]:
        """`dedup` and the set-aside counts by node (`n` None where withheld)."""
        return {
            "on": self.dedup,
            "set_aside": {
                n: {"n": c.n, "released": c.released, "noise": c.noise}
                for n, c in self.set_aside().items()
            },
        }

    @property
    def min_nodes_met(self) -> bool:
        """Did at least `min_nodes` nodes answer every round?"""
        answered = sum(s.status == "answered" for s in self.nodes.values())
        return self.result is not None and answered >= self.min_nodes

    def to_json(self) -> dict[str, Any]:
        """The machine form printed by `ccdp run --json` (and `ccdp submit --json`)."""
        return {
            "study_id": self.study_id,
            "title": self.title,
            "analysis": self.analysis,
            "rounds": self.rounds,
            "error": self.error,
            "min_nodes": self.min_nodes,
            "min_nodes_met": self.min_nodes_met,
            "nodes": {n: s.model_dump() for n, s in self.nodes.items()},
            "dedup": self.dedup_json(),
            "result": self.result.model_dump(mode="json") if self.result is not None else None,
        }

    def to_frame(self, steps: bool = False) -> pd.DataFrame:
        """The result as a pandas DataFrame, its summary or (`steps=True`, KM) its step table;
        empty when there is no result."""
        return self.result.to_frame(steps=steps) if self.result is not None else pd.DataFrame()

    def node_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"node": n, **s.model_dump()} for n, s in self.nodes.items()],
            columns=["node", "status", "reason"],
        )

    def plot(self, **kwargs: Any) -> Any:
        """The result's own plot (KM curves, forest plot, bar chart): a matplotlib Figure."""
        if self.result is None:
            raise StudyError("the study has no result to plot")
        plot = getattr(self.result, "plot", None)
        if plot is None:
            raise StudyError(f"{self.analysis} results have no plot; use to_frame()")
        return plot(**kwargs)


def _roundtrip_task(task: Task) -> Task:
    return Task.model_validate_json(task.model_dump_json())


def run_study(spec: StudySpec | dict | Path | str, transport: Transport) -> StudyResult:
    """Drive the study's analysis over `transport` until it is done; per-node status kept."""
    spec = load_study(spec)
    analysis = registry.get(spec.analysis)
    params = spec.parsed_params()
    study_id = uuid.uuid4().hex[:16]
    targets = list(spec.nodes or transport.nodes())
    unknown = [n for n in targets if n not in transport.nodes()]
    if unknown:
        raise SpecError(f"nodes: unknown node(s) {unknown}; known: {transport.nodes()}")
    need = _minimum(spec, targets)
    statuses: dict[str, NodeStatus] = {}
    active = list(targets)
    rounds = 0

    def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
        nonlocal active, rounds
        rounds = round_no + 1
        task = _roundtrip_task(
            Task(
                task_id=f"{study_id}-r{round_no}",
                study_id=study_id,
                round=round_no,
                analysis=spec.analysis,
                params=spec.params,
                cohort=spec.cohort_json(),
                request=request,
                title=spec.title,
                project=spec.project,
                data_use=spec.data_use,  # the node keeps only patients whose consent permits it
            )
        )
        answers = transport.ask(task, active)
        summaries: dict[str, Summary] = {}
        for name in active:
            ans = answers.get(name) or Answer(
                task_id=task.task_id, node=name, status="failed", reason="no answer"
            )
            ans, summary = _received(ans, analysis, params, request)  # off the wire
            if summary is not None:
                summaries[name] = summary
                statuses[name] = NodeStatus(status="answered", reason=ans.reason)
            else:
                statuses[name] = NodeStatus(status=ans.status, reason=ans.reason)
                if round_no > 0:
                    raise _Stopped(
                        f"node {name} stopped answering in round {round_no}; "
                        "a result without it would not be the pooled one"
                    )
        active = [n for n in active if n in summaries]
        if len(summaries) < need:
            raise _TooFew(f"{len(summaries)} node(s) answered; the study needs {need}")
        return summaries

    error = None
    try:
        result = drive(analysis, params, ask)
    except _Stopped as exc:
        result, error = None, str(exc)
    return StudyResult(
        study_id=study_id,
        title=spec.title,
        analysis=spec.analysis,
        nodes={n: statuses[n] for n in targets if n in statuses},
        result=result,
        rounds=rounds,
        error=error,
        min_nodes=need,
        # a specimen count is never de-duplicated (docs/dedup.md): nothing to say
        dedup=params.dedup if analysis.view_rows(params) == "tumours" else None,
    )


def _minimum(spec: StudySpec, targets: list[str]) -> int:
    """The study's minimum of answering nodes: as given, else every node it names."""
    if spec.min_nodes is None:
        return len(targets)
    if spec.min_nodes > len(targets):
        raise SpecError(
            f"min_nodes: {spec.min_nodes} is more than the {len(targets)} node(s) the study asks"
        )
    return spec.min_nodes


def _received(
    ans: Answer, analysis: Analysis, params: AnalysisParams, request: dict[str, Any]
) -> tuple[Answer, Summary | None]:
    """The answer and its summary as the coordinator can use them: a malformed summary (ragged
    or non-finite arrays, negative counts, parts other than the analysis sends) makes it a
    `failed` answer saying why, never a result."""
    if ans.status != "answered" or ans.summary is None:
        return ans, None
    try:
        summary = Summary.from_dict(ans.summary)
        analysis.check_summary(summary, params, request)
        return ans, summary
    except MalformedSummary as exc:
        why = f"node {ans.node} sent a malformed summary: {exc}"
        return ans.model_copy(update={"status": "failed", "reason": why, "summary": None}), None


class _Stopped(StudyError):
    """The study cannot give the pooled result (the node statuses say why)."""


class _TooFew(_Stopped):
    """Too few nodes answered to give a result."""

"""The plug-in contract every analysis follows.

A federated analysis is a conversation of one or more rounds. The coordinator calls `start` for the
first request, sends it to every node, each node runs `local` on its own analysis view and answers
with a `Summary`, and the coordinator calls `combine` on the summaries; `combine` either finishes
(`Done`) or asks for another round (`Continue`, e.g. a Newton step of Cox or IRLS).

A Summary is made of typed parts so that disclosure control can judge any analysis's output
without knowing the analysis: `CountsPart` (cell counts: small-cell and secondary suppression),
`EventTimesPart` (event-time tables: time grid and group-size rules) and `AggregatePart` (model sums
such as a gradient and Hessian: minimum cohort size and parameter count).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict


class AnalysisParams(BaseModel):
    """Base of every analysis's parameter model; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class AnalysisResult(BaseModel):
    """Base of every result: JSON-serialisable, printable as a table, convertible to pandas."""

    model_config = ConfigDict(extra="forbid")

    analysis: str

    def to_frame(self) -> pd.DataFrame:  # overridden by each result
        return pd.DataFrame([self.model_dump(mode="json")])


@dataclass
class CountsPart:
    """A table of counts. `cells` rows hold the grouping values (`dims`) and count columns
    (`counts`); disclosure suppresses small cells and applies secondary suppression over margins."""

    kind: ClassVar[Literal["counts"]] = "counts"
    dims: list[str]
    counts: list[str]
    cells: list[dict[str, Any]]


@dataclass
class EventTimesPart:
    """Per-group event-time table (time, at_risk/events/censored...) as KM, log-rank and
    unstratified Cox need; allowed or coarsened according to the node's policy."""

    kind: ClassVar[Literal["event_times"]] = "event_times"
    group_by: list[str]
    rows: list[dict[str, Any]]
    group_sizes: dict[str, int]
    time_unit: str = "day"


@dataclass
class AggregatePart:
    """Model sums (gradient, Hessian, log-likelihood, deviance, ...) over `n` rows estimating
    `n_params` parameters; refused below the node's minimum cohort size or above n/3 params."""

    kind: ClassVar[Literal["aggregate"]] = "aggregate"
    n: int
    n_params: int
    values: dict[str, Any]


Part = CountsPart | EventTimesPart | AggregatePart


PART_TYPES: dict[str, type] = {c.kind: c for c in (CountsPart, EventTimesPart, AggregatePart)}


@dataclass
class Summary:
    """What a node sends back for one round: named parts, each judged by disclosure control."""

    parts: dict[str, Part] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats round-trip exactly through JSON in Python)."""
        # Shallow on purpose: dataclasses.asdict deep-copies every row, which dominates the cost
        # of large event-time tables; the parts hold only JSON types already.
        return {
            name: {"kind": p.kind, **{f.name: getattr(p, f.name) for f in fields(p)}}
            for name, p in self.parts.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        parts: dict[str, Part] = {}
        for name, raw in data.items():
            body = dict(raw)
            kind = body.pop("kind")
            if kind not in PART_TYPES:
                raise ValueError(f"summary part {name!r} has unknown kind {kind!r}")
            parts[name] = PART_TYPES[kind](**body)
        return cls(parts=parts)


class NodeData(Protocol):
    """What `local` may read at a node: the cohort-filtered analysis view and the denominators."""

    node: str

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The analysis view (one row per tumour), restricted to the study's cohort."""
        ...

    def population(self) -> pd.DataFrame:
        """The node's population table (country, year, sex, age_group, population)."""
        ...


@dataclass
class FrameData:
    """NodeData over in-memory frames: for tests, notebooks and dry runs."""

    frame: pd.DataFrame
    population_frame: pd.DataFrame | None = None
    node: str = "local"

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.frame if columns is None else self.frame[columns]

    def population(self) -> pd.DataFrame:
        if self.population_frame is None:
            raise LookupError(f"node {self.node} has no population table")
        return self.population_frame


@dataclass
class Continue:
    """Another round is needed: send `request` to the nodes; `state` stays at the coordinator."""

    request: dict[str, Any]
    state: Any = None


@dataclass
class Done:
    """The analysis has finished with `result`."""

    result: AnalysisResult


class Analysis(ABC):
    """An analysis plug-in. Subclasses set `name` and `params_model` and implement the three steps.

    `local` receives the node's data (`NodeData`: the cohort-filtered analysis view, one row per
    tumour, see ccdp.cohort, and the population table) and a per-study `cache` dict that lives
    across rounds at that node, so multi-round analyses prepare their arrays once.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[AnalysisParams]]

    def columns(self, params: AnalysisParams) -> list[str] | None:
        """View columns `local` needs (None: all); lets the node read only what it must."""
        return None

    def check_cohort(self, variables: set[str]) -> None:
        """Raise CohortError if a cohort on these variables would make the answer wrong."""
        return None

    def start(self, params: AnalysisParams) -> Continue:
        """The first request sent to the nodes."""
        return Continue(request={})

    @abstractmethod
    def local(
        self,
        data: NodeData,
        params: AnalysisParams,
        request: dict[str, Any],
        cache: dict[str, Any],
    ) -> Summary:
        """Run at a node on its own data; returns only aggregates."""

    @abstractmethod
    def combine(
        self,
        params: AnalysisParams,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Continue | Done:
        """Run at the coordinator on the summaries of the nodes that answered (keyed by node)."""

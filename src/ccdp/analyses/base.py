"""The plug-in contract every analysis follows.

A federated analysis is a conversation of one or more rounds. The coordinator calls `start` for the
first request, sends it to every node, each node runs `local` on its own analysis view and answers
with a `Summary` (ccdp.wire.summary: typed parts that disclosure control judges without knowing
the analysis), and the coordinator calls `combine` on the summaries; `combine` either finishes
(`Done`) or asks for another round (`Continue`, e.g. a Newton step of Cox or IRLS).

Each analysis declares its `params_model` and `result_model`, so that a spec's parameters are
validated at the edge and a result read back from JSON is rebuilt as the analysis's own type.
"""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from rich.console import Group
from rich.protocol import rich_cast
from rich.table import Table
from rich.text import Text

from ccdp.analyses._render import to_text
from ccdp.analyses.tables import frame_table
from ccdp.wire.errors import AnalysisError, MalformedSummary
from ccdp.wire.summary import PartSpec, Summary, check_parts

if TYPE_CHECKING:
    import pandas as pd

    from ccdp.analyses.node_data import NodeData
    from ccdp.cohort.view import Rows


class AnalysisParams(BaseModel):
    """Base of every analysis's parameter model; unknown keys are refused.

    `dedup` (every analysis, default on): a child registered at several nodes and linked by
    record linkage is counted at one node only; each node leaves out its rows of the children
    whose link group another node's copy represents (`link_group.keep = false`) and says, through
    its disclosure gate, how many it set aside (docs/dedup.md). Off, every node counts all its
    rows, as before linkage. Specimen counts are never de-duplicated: each sample is real."""

    model_config = ConfigDict(extra="forbid")

    dedup: bool = Field(
        True,
        description="count a child linked across nodes at one node only (docs/dedup.md)",
    )

    @model_serializer(mode="wrap")
    def _dedup_when_off(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`dedup` is written only when off: the default leaves every dump, and so the hash of
        every study registered before `dedup` existed (governance/registered.py), as it was,
        while a study with `dedup: false` hashes apart from its twin."""
        out: dict[str, Any] = handler(self)
        if self.dedup:
            out.pop("dedup", None)
        return out


class NoStepTable(AnalysisError):
    """`to_frame(steps=True)` on a result that has no step table (only KM has one)."""


class AnalysisResult(BaseModel):
    """Base of every result: JSON-serialisable, convertible to pandas, and shown as `ccdp run`
    prints it: `print` gives the CLI's text, `repr` one line, notebooks the same tables as HTML.

    A result draws itself once, in `__rich__` (default: its summary frame as a table); the
    text, the HTML and the CLI all come from that drawing."""

    model_config = ConfigDict(extra="forbid")

    analysis: str
    text_width: ClassVar[int] = 100  # the terminal width `print` renders for

    def to_frame(self, steps: bool = False) -> pd.DataFrame:
        """The summary a reader wants, unformatted (one row per group or term, as printed); with
        `steps=True` the step table of a result that has one (KM: a row per group and time)."""
        return self._steps_frame() if steps else self._summary_frame()

    def _summary_frame(self) -> pd.DataFrame:  # overridden by each result
        import pandas as pd

        return pd.DataFrame([self.model_dump(mode="json")])

    def _steps_frame(self) -> pd.DataFrame:
        raise NoStepTable(f"{self.analysis} results have no step table; use to_frame()")

    def brief(self) -> str:
        """What the one-line repr says after the class name (overridden where more is known)."""
        return plural(len(self.to_frame()), "row")

    def __rich__(self) -> Any:
        return frame_table(self.to_frame())

    def __str__(self) -> str:
        return to_text(self, width=self.text_width)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.brief()}>"

    def _repr_html_(self) -> str:
        """Notebooks: the printed tables as HTML tables, every text escaped."""
        return f'<div class="ccdp-result">{rich_html(self.__rich__())}</div>'


def plural(n: int, noun: str) -> str:
    """'1 group', '3 groups'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rich_html(renderable: Any) -> str:
    """The HTML of what rich prints: each Table an HTML table (title as caption, caption below),
    a Group its parts in order, a line of text a paragraph, anything else its printed text; all
    text escaped."""
    renderable = rich_cast(renderable)  # a result: what its __rich__ draws
    if isinstance(renderable, str | Text):
        return f"<p>{_esc(_plain(renderable))}</p>"
    if isinstance(renderable, Group):
        return "".join(rich_html(part) for part in renderable.renderables)
    if isinstance(renderable, Table):
        return _table_html(renderable)
    return f"<pre>{_esc(to_text(renderable))}</pre>"


def _plain(markup: Any) -> str:
    """The text rich shows for a cell, title or header (markup applied, so escapes undone)."""
    if isinstance(markup, Text):
        return markup.plain
    if isinstance(markup, str):
        return Text.from_markup(markup).plain
    return to_text(markup)


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _table_html(table: Table) -> str:
    def cell(tag: str, value: Any, justify: str) -> str:
        style = ' style="text-align:right"' if justify == "right" else ""
        return f"<{tag}{style}>{_esc(_plain(value))}</{tag}>"

    cols = table.columns
    head = "".join(cell("th", c.header, c.justify) for c in cols)
    rows = zip(*(list(c.cells) for c in cols), strict=True)
    body = "".join(
        "<tr>" + "".join(cell("td", v, c.justify) for v, c in zip(row, cols, strict=True)) + "</tr>"
        for row in rows
    )
    title = f"<caption>{_esc(_plain(table.title))}</caption>" if table.title else ""
    note = f"<p>{_esc(_plain(table.caption))}</p>" if table.caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


@dataclass
class Continue:
    """Another round is needed: send `request` to the nodes; `state` stays at the coordinator."""

    request: dict[str, Any]
    state: Any = None


@dataclass
class Done:
    """The analysis has finished with `result`."""

    result: AnalysisResult


P = TypeVar("P", bound=AnalysisParams)


class Analysis(ABC, Generic[P]):
    """An analysis plug-in. Subclasses set `name`, `params_model` and `result_model` and implement
    the steps.

    Generic over its params model `P`, so that each plug-in's steps take its own params type.

    `local` receives the node's data (`NodeData`: the cohort-filtered analysis view, one row per
    tumour, see ccdp.cohort, and the population table) and a per-study `cache` dict that lives
    across rounds at that node, so multi-round analyses prepare their arrays once.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[AnalysisParams]]
    result_model: ClassVar[type[AnalysisResult]]

    def columns(self, params: P) -> list[str] | None:
        """View columns `local` needs (None: all); lets the node read only what it must."""
        return None

    def followup_outcome(self, params: P) -> str | None:
        """The time-to-event outcome (os, efs, ...) whose follow-up `local` needs, or None: the
        node then says, through the gate, how many cases it left out for lack of follow-up."""
        return None

    def check_cohort(self, variables: set[str]) -> None:
        """Raise CohortError if a cohort on these variables would make the answer wrong."""
        return None

    def view_rows(self, params: P) -> Rows:
        """What a row of the view `local` reads is: a tumour, or a specimen (`unit:
        specimens`), which only a count may read."""
        return "tumours"

    def check_request(self, params: P, variables: set[str]) -> None:
        """CohortError unless a cohort on `variables` suits this analysis with `params`:
        `check_cohort`, and specimen variables only on specimen rows."""
        self.check_cohort(variables)
        if self.view_rows(params) == "specimens":
            return
        from ccdp.cohort.spec import CohortError
        from ccdp.cohort.view import specimen_only

        used = specimen_only(variables | set(self.columns(params) or []))
        if used:
            raise CohortError(
                f"{', '.join(used)}: a specimen variable; only a count or crosstab with "
                "unit: specimens reads specimen rows"
            )

    def start(self, params: P) -> Continue:
        """The first request sent to the nodes."""
        return Continue(request={})

    def summary_parts(self, params: P, request: dict[str, Any]) -> dict[str, PartSpec] | None:
        """The parts `local` sends for `request`, so a summary can be checked where it is
        received (the hub refuses one of the wrong shape before storing it); None: not said."""
        return None

    def check_summary(self, summary: Summary, params: P, request: dict[str, Any]) -> None:
        """MalformedSummary unless `summary` is one `local` could have sent for `request`: not
        empty and, where the analysis says (`summary_parts`), exactly its parts and shapes."""
        expected = self.summary_parts(params, request)
        if expected is None:
            if not summary.parts:
                raise MalformedSummary(f"{self.name}: the summary is empty (it has no parts)")
            return
        check_parts(summary, expected, self.name)

    @abstractmethod
    def local(
        self,
        data: NodeData,
        params: P,
        request: dict[str, Any],
        cache: dict[str, Any],
    ) -> Summary:
        """Run at a node on its own data; returns only aggregates."""

    @abstractmethod
    def combine(
        self,
        params: P,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Continue | Done:
        """Run at the coordinator on the summaries of the nodes that answered (keyed by node)."""

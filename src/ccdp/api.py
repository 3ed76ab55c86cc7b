"""Python API for notebooks: the same studies, nodes and result objects as `ccdp run`.

import ccdp.api as ccdp
res = ccdp.run({"analysis": "km", "outcome": "os", "by": ["iccc_group"]},
               stores=["fr.duckdb", "de.duckdb"])
print(res)            # what `ccdp run` prints: the result's tables, then each node's status
res.to_frame()        # the summary (KM: a row per group); res.to_frame(steps=True) the curves
res.plot(); res.nodes
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from ccdp.analyses.base import rich_html
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.local import LocalNode
from ccdp.federation.study import (
    StudyResult,
    StudySpec,
    load_study,
    registered_hashes,
    run_study,
)
from ccdp.governance.projects import ProjectSpec
from ccdp.report.console import print_study
from ccdp.wire.protocol import Transport

TEXT_WIDTH = 100  # the terminal width `print(res)` renders for, as results print


class Result(StudyResult):
    """What `run` returns: a StudyResult that shows itself as `ccdp run` prints it (`print`),
    in one line (`repr`) and as HTML tables in a notebook."""

    def __str__(self) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=TEXT_WIDTH, color_system=None, force_terminal=False)
        print_study(self, console)
        return buf.getvalue().rstrip("\n")

    def __repr__(self) -> str:
        answered = sum(s.status == "answered" for s in self.nodes.values())
        shown = repr(self.result) if self.result is not None else f"no result: {self.error}"
        return (
            f"<Result {self.analysis} {self.title!r}: {answered} of {len(self.nodes)} nodes "
            f"answered; {shown}{self._dedup_brief()}>"
        )

    def _dedup_brief(self) -> str:
        """'; dedup off', or the linked duplicates each node set aside ('withheld' where its
        gate withheld the count); empty when no node holds link groups."""
        if self.dedup is False:
            return "; dedup off"
        counts = self.set_aside()
        if not counts:
            return ""
        shown = ", ".join(
            f"{n} {c.n if c.n is not None else 'withheld'}" for n, c in counts.items()
        )
        return f"; linked duplicates set aside: {shown}"

    def _repr_html_(self) -> str:
        """What `print` shows, as HTML: the same parts, each table an HTML table."""
        printed = _Printed()
        print_study(self, printed)
        return f'<div class="ccdp-study">{"".join(map(rich_html, printed.parts))}</div>'


class _Printed(Console):
    """A console that keeps what is printed on it, for HTML, instead of writing it."""

    def __init__(self) -> None:
        super().__init__(file=io.StringIO())
        self.parts: list[Any] = []

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.parts.extend(objects)


def run(
    spec: StudySpec | dict[str, Any] | str | Path,
    stores: list[str | Path | LocalNode] | None = None,
    transport: Transport | None = None,
    project: ProjectSpec | dict[str, Any] | str | Path | None = None,
    **params: Any,
) -> Result:
    """Run a study (a spec, a dict, or a YAML/JSON path; keyword arguments add or override
    keys) over local stores or any transport; returns its Result (a StudyResult that prints).

    Over local stores each node releases what it would release to a researcher: counts under
    its policy's `counts` (perturbed by default), other analyses exact with a note where a
    networked node would hold them for review. `project` (a project file whose protocol lists
    this study) runs it as a registered study: exact, as an accepting node answers it."""
    study = load_study(spec)
    if params:
        study = load_study({**study.model_dump(exclude_unset=True, by_alias=True), **params})
    if transport is None:
        if not stores:
            raise ValueError("give stores=[...] (node store files) or a transport")
        hashes = registered_hashes(study, project) if project is not None else frozenset()
        transport = InProcessTransport(list(stores), registered=hashes)
    elif project is not None:
        raise ValueError("project= registers a study for local stores; a hub knows its own")
    done = run_study(study, transport)
    return Result.model_construct(**dict(done))


def view(store: str | Path, cohort: dict[str, Any] | None = None) -> pd.DataFrame:
    """The analysis view of one store you operate (node-side only: patient-level rows)."""
    from ccdp.cohort.spec import CohortSpec

    node = LocalNode(store)
    return node.read_view(None, CohortSpec.load(cohort))


def variables() -> pd.DataFrame:
    """The analysis view's data dictionary."""
    from ccdp.cohort.view import describe

    return pd.DataFrame(describe())


__all__ = ["Result", "StudyResult", "StudySpec", "run", "variables", "view"]

"""Python API for notebooks: the same studies, nodes and result objects as `ccdp run`.

import ccdp.api as ccdp
res = ccdp.run({"analysis": "km", "outcome": "os", "by": ["iccc_group"]},
               stores=["fr.duckdb", "de.duckdb"])
res.to_frame(); res.plot(); res.nodes
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

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
from ccdp.wire.protocol import Transport


def run(
    spec: StudySpec | dict[str, Any] | str | Path,
    stores: list[str | Path | LocalNode] | None = None,
    transport: Transport | None = None,
    project: ProjectSpec | dict[str, Any] | str | Path | None = None,
    **params: Any,
) -> StudyResult:
    """Run a study (a spec, a dict, or a YAML/JSON path; keyword arguments add or override
    keys) over local stores or any transport; returns the StudyResult.

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
    return run_study(study, transport)


def view(store: str | Path, cohort: dict[str, Any] | None = None) -> pd.DataFrame:
    """The analysis view of one store you operate (node-side only: patient-level rows)."""
    from ccdp.cohort.spec import CohortSpec

    node = LocalNode(store)
    return node.read_view(None, CohortSpec.load(cohort))


def variables() -> pd.DataFrame:
    """The analysis view's data dictionary."""
    from ccdp.cohort.view import describe

    return pd.DataFrame(describe())


__all__ = ["StudyResult", "StudySpec", "run", "variables", "view"]

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
from ccdp.federation.study import StudyResult, StudySpec, load_study, run_study
from ccdp.wire.protocol import Transport


def run(
    spec: StudySpec | dict[str, Any] | str | Path,
    stores: list[str | Path | LocalNode] | None = None,
    transport: Transport | None = None,
    **params: Any,
) -> StudyResult:
    """Run a study (a spec, a dict, or a YAML/JSON path; keyword arguments add or override
    keys) over local stores or any transport; returns the StudyResult."""
    if transport is None:
        if not stores:
            raise ValueError("give stores=[...] (node store files) or a transport")
        transport = InProcessTransport(list(stores))
    study = load_study(spec)
    if params:
        study = load_study({**study.model_dump(exclude_unset=True, by_alias=True), **params})
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

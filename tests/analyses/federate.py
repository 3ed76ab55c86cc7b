"""Run an analysis over in-memory nodes exactly as the federation does, with every message
(params, requests, summaries) passed through its JSON wire form."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ccdp.analyses import registry
from ccdp.analyses.base import AnalysisResult
from ccdp.analyses.event_data import UNIT_DAYS, coarsen, group_labels
from ccdp.analyses.node_data import FrameData
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.coordinator import drive
from ccdp.wire.errors import InsufficientData
from ccdp.wire.summary import Summary


def split(frame: pd.DataFrame, k: int, rng: np.random.Generator) -> list[pd.DataFrame]:
    """A random split of the rows over k nodes (uneven sizes; a node may get few rows)."""
    weights = rng.dirichlet(np.ones(k))
    nodes = rng.choice(k, size=len(frame), p=weights)
    return [frame[nodes == i].reset_index(drop=True) for i in range(k)]


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj, allow_nan=False))


def federate(
    name: str, params: dict[str, Any], frames: list[pd.DataFrame], min_cell: int | None = None
) -> AnalysisResult:
    """Drive `name` over one node per frame; nodes without usable rows decline. `min_cell` sets
    the nodes' policy (None: the default), which decides how they group event times."""
    analysis = registry.get(name)
    p = analysis.params_model.model_validate(wire(params))
    nodes = [
        FrameData(f, node=f"n{i}", context=ctx)
        for i, (f, ctx) in enumerate(zip(frames, contexts(frames, min_cell), strict=True))
    ]
    caches: dict[str, dict] = {n.node: {} for n in nodes}

    def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
        out = {}
        for node in nodes:
            node_params = analysis.params_model.model_validate(wire(p.model_dump(mode="json")))
            try:
                s = analysis.local(node, node_params, wire(request), caches[node.node])
            except InsufficientData:
                continue
            out[node.node] = Summary.from_dict(wire(s.to_dict()))
        return out

    result = drive(analysis, p, ask)
    again = type(result).model_validate(wire(result.model_dump(mode="json")))
    assert again == result
    return result


def contexts(frames: list[pd.DataFrame], min_cell: int | None) -> list[DisclosureContext]:
    """One disclosure context (own ledger) per node; `min_cell` None keeps the default policy."""
    policy = NodePolicy() if min_cell is None else NodePolicy(min_cell=min_cell)
    return [DisclosureContext(policy=policy) for _ in frames]


def grouped(
    frames: list[pd.DataFrame],
    by: list[str],
    outcome: str = "os",
    unit: str = "day",
    min_cell: int | None = None,
) -> pd.DataFrame:
    """The pooled data with each node's times on its grid and grouped as the node groups them
    before it sends an event-time table (same groups `by`, same keys, same min_cell): the data
    a federated KM, log-rank or unstratified Cox is exact for. `grouped_row`: the row's
    interval holds more than one time (start < end)."""
    tcol, ecol = f"{outcome}_time", f"{outcome}_event"
    out = []
    for i, (frame, ctx) in enumerate(zip(frames, contexts(frames, min_cell), strict=True)):
        node = FrameData(frame, context=ctx)
        rows = frame.dropna(subset=[tcol, ecol, *by])
        time = coarsen(rows[tcol].to_numpy(dtype=float), unit)
        keys = node.record_keys(rows.index)
        labels = group_labels(rows, by).astype(str)
        start, new = ctx.group_intervals(labels, time, keys, UNIT_DAYS[unit])
        out.append(rows.assign(**{tcol: new, "grouped_row": start < new, "node_index": i}))
    return pd.concat(out, ignore_index=True)

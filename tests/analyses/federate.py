"""Run an analysis over in-memory nodes exactly as the federation does, with every message
(params, requests, summaries) passed through its JSON wire form."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ccdp.analyses import registry
from ccdp.analyses.base import AnalysisResult, FrameData, Summary
from ccdp.analyses.errors import InsufficientData
from ccdp.federation.coordinator import drive


def split(frame: pd.DataFrame, k: int, rng: np.random.Generator) -> list[pd.DataFrame]:
    """A random split of the rows over k nodes (uneven sizes; a node may get few rows)."""
    weights = rng.dirichlet(np.ones(k))
    nodes = rng.choice(k, size=len(frame), p=weights)
    return [frame[nodes == i].reset_index(drop=True) for i in range(k)]


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj, allow_nan=False))


def federate(name: str, params: dict[str, Any], frames: list[pd.DataFrame]) -> AnalysisResult:
    """Drive `name` over one node per frame; nodes without usable rows decline."""
    analysis = registry.get(name)
    p = analysis.params_model.model_validate(wire(params))
    nodes = [FrameData(f, node=f"n{i}") for i, f in enumerate(frames)]
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

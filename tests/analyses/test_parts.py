"""What a node sends: honest disclosure metadata, only aggregates, refusals when it has no data,
and arrays prepared once per study (the node cache)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ccdp.analyses import registry
from ccdp.analyses.node_data import FrameData
from ccdp.wire.errors import InsufficientData, MalformedSummary
from ccdp.wire.protocol import Answer
from ccdp.wire.summary import AggregatePart, CountsPart, EventTimesPart, Summary, pack
from tests.analyses.data import cohort

COV = ["age_at_diagnosis", "sex", "risk_group"]


def first_fit_request(name: str, params: dict, node: FrameData):
    analysis = registry.get(name)
    p = analysis.params_model.model_validate(params)
    step = analysis.start(p)
    described = {node.node: analysis.local(node, p, step.request, {})}
    return analysis, p, analysis.combine(p, step.state, described), described[node.node]


def test_describe_round_sends_levels_as_counts_and_sums_as_aggregate() -> None:
    df = cohort(120, 1)
    node = FrameData(df, node="A")
    _, _, _, summary = first_fit_request("cox", {"covariates": COV}, node)
    levels = summary.parts["levels:risk_group"]
    assert isinstance(levels, CountsPart) and levels.dims == ["risk_group"]
    assert {c["risk_group"]: c["n"] for c in levels.cells} == df[
        "risk_group"
    ].value_counts().to_dict()
    moments = summary.parts["moments"]
    assert isinstance(moments, AggregatePart) and moments.n == 120
    assert moments.values["sums"]["age_at_diagnosis"] == pytest.approx(df["age_at_diagnosis"].sum())


def test_cox_by_node_sends_model_sums_with_n_and_parameter_count() -> None:
    df = cohort(150, 2)
    node = FrameData(df, node="A")
    analysis, p, step, _ = first_fit_request("cox", {"covariates": COV}, node)
    cache: dict = {}
    part = analysis.local(node, p, step.request, cache).parts["model"]
    assert isinstance(part, AggregatePart)
    assert (part.n, part.n_params) == (150, 4)
    assert set(part.values) == {"loglik", "score", "info", "events"}
    prepared = cache["cox"]
    analysis.local(node, p, step.request, cache)
    assert cache["cox"] is prepared  # sorted once, reused every Newton round


def test_unstratified_cox_sends_event_time_table_with_group_sizes() -> None:
    df = cohort(150, 3)
    node = FrameData(df, node="A")
    params = {"covariates": ["age_at_diagnosis"], "strata": ["sex"], "time_unit": "week"}
    analysis, p, step, _ = first_fit_request("cox", params, node)
    part = analysis.local(node, p, step.request, {}).parts["risk_sets"]
    assert isinstance(part, EventTimesPart)
    assert part.group_by == ["sex"] and part.time_unit == "week"
    assert part.group_sizes == df["sex"].value_counts().to_dict()
    assert np.allclose(part.columns["time"] % 7, 0)
    assert part.columns["d"].sum() == df["os_event"].sum()
    assert part.columns["a"].shape == (len(part), 3)  # w, w·x, w·x²


def test_km_part_per_group_and_glm_part() -> None:
    df = cohort(100, 4)
    node = FrameData(df, node="A")
    km = registry.get("km")
    p = km.params_model.model_validate({"by": ["risk_group"]})
    part = km.local(node, p, {}, {}).parts["events"]
    assert part.group_sizes == df["risk_group"].value_counts().to_dict()
    assert (part.columns["events"] + part.columns["censored"]).sum() == 100
    analysis, p, step, _ = first_fit_request(
        "logistic", {"outcome": "os_event", "covariates": COV}, node
    )
    glm_part = analysis.local(node, p, step.request, {}).parts["model"]
    assert (glm_part.n, glm_part.n_params) == (100, 5)


def test_node_without_rows_declines() -> None:
    df = cohort(50, 5)
    df["wbc_at_diagnosis"] = np.nan
    node = FrameData(df, node="A")
    cox = registry.get("cox")
    p = cox.params_model.model_validate({"covariates": ["wbc_at_diagnosis"]})
    with pytest.raises(InsufficientData, match=r"node A: no rows with .*wbc_at_diagnosis"):
        cox.local(node, p, {"step": "describe"}, {})


def test_event_time_columns_cross_the_protocol_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((50, 10)) * 10.0 ** rng.integers(-30, 30, (50, 10))
    columns = {"group": ["x"] * 50, "time": np.arange(50.0), "d": np.arange(50), "a": a}
    summary = Summary({"t": EventTimesPart(group_by=[], columns=columns, group_sizes={"x": 50})})
    sent = Answer(task_id="t", node="A", status="answered", summary=summary.to_dict())
    got = Answer.model_validate_json(sent.model_dump_json())
    assert got.summary is not None
    back = Summary.from_dict(got.summary).parts["t"]
    assert isinstance(back, EventTimesPart) and len(back) == 50
    assert back.columns["a"].tobytes() == a.tobytes()
    assert back.columns["d"].dtype.kind == "i" and back.columns["group"].tolist() == ["x"] * 50
    wire = got.summary["t"]["columns"]
    assert wire["time"] == list(range(50)) and wire["a"]["encoding"] == "float64-le-base64"


PACKED_NAN = pack(np.array([[np.nan]]))


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"time": [1.0]}, "needs `group` and `time`"),
        ({"group": ["x"], "time": [float("inf")]}, "'time': values must be finite"),
        ({"group": ["x"], "time": [None]}, "'time': values must be numbers"),
        ({"group": ["x", "y"], "time": [1.0]}, "columns of different lengths"),
        ({"group": ["x"], "time": [1.0], "a": [[1.0, 2.0], [1.0]]}, "'a': rows of different"),
        ({"group": [1], "time": [1.0]}, "group labels must be a list of text"),
        ({"group": ["x"], "time": 1.0}, "a list of values is needed"),
        ({"group": ["x"], "time": [1.0], "a": {**PACKED_NAN, "shape": [1, 2]}}, "not base64 of"),
        ({"group": ["x"], "time": [1.0], "a": {**PACKED_NAN, "data": "%%"}}, "not base64 of"),
        ({"group": ["x"], "time": [1.0], "a": {**PACKED_NAN, "shape": ["1"]}}, "list of sizes"),
        ({"group": ["x"], "time": [1.0], "a": {"shape": [1]}}, "a packed array is"),
        ({"group": ["x"], "time": [1.0], "a": PACKED_NAN}, "'a': values must be finite"),
    ],
)
def test_malformed_event_time_tables_are_refused(columns: dict, message: str) -> None:
    wire = {"kind": "event_times", "group_by": [], "columns": columns, "group_sizes": {}}
    with pytest.raises(MalformedSummary, match=re.escape(message)):
        Summary.from_dict({"t": wire})


def test_malformed_parts_are_refused() -> None:
    aggregate = {"kind": "aggregate", "n": 30, "n_params": 1}
    with pytest.raises(MalformedSummary, match="'m', score: values must be finite"):
        Summary.from_dict({"m": {**aggregate, "values": {"score": [1.0, float("nan")]}}})
    with pytest.raises(MalformedSummary, match="'m', loglik: values must be numbers"):
        Summary.from_dict({"m": {**aggregate, "values": {"loglik": "high"}}})
    with pytest.raises(MalformedSummary, match=r"'m': .*unexpected keyword argument 'x'"):
        Summary.from_dict({"m": {**aggregate, "values": {}, "x": 1}})
    rows = {"kind": "event_times", "group_by": [], "rows": [], "group_sizes": {}}
    with pytest.raises(MalformedSummary, match="travel as `columns`, not `rows`"):
        Summary.from_dict({"e": rows})
    with pytest.raises(MalformedSummary, match="unknown kind 'rows'"):
        Summary.from_dict({"m": {"kind": "rows"}})

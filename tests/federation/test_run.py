"""count/crosstab over several real stores equal the pooled answer; `ccdp run --json` end to end."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest

from ccdp.cohort.view import cohort_sql
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.local import LocalNode
from ccdp.federation.study import load_study, run_study
from ccdp.report.html import dash_note, frame_html, result_frame
from ccdp.wire.protocol import Answer, Task
from tests.storekit import EXACT_YAML, build_store, random_registry

SIZES = {"fr": (1, 400, "FR"), "de": (2, 600, "DE"), "it": (3, 250, "IT")}


@pytest.fixture
def stores(tmp_path):
    return [
        build_store(tmp_path / f"{n}.duckdb", random_registry(seed, size, c, n))
        for n, (seed, size, c) in SIZES.items()
    ]


def pooled_view(stores) -> pd.DataFrame:
    frames = []
    for s in stores:
        con = duckdb.connect()
        con.execute(f"ATTACH '{s}' AS store (READ_ONLY)")
        frames.append(con.execute(cohort_sql(None, "TRUE"), [s.stem]).df())
        con.close()
    return pd.concat(frames, ignore_index=True)


def test_count_by_two_variables_equals_pooled(stores):
    result = run_study(
        {
            "analysis": "count",
            "by": ["iccc_group", "sex"],
            "cohort": {"diagnosis_year": {"from": 2006}},
        },
        InProcessTransport(stores),
    )
    assert {n: s.status for n, s in result.nodes.items()} == dict.fromkeys(SIZES, "answered")
    pooled = pooled_view(stores)
    pooled = pooled[pooled.diagnosis_year >= 2006]
    expect = pooled.groupby(["iccc_group", "sex"]).size()
    got = {(c["iccc_group"], c["sex"]): c["n"] for c in result.result.cells}
    released = {k: v for k, v in got.items() if v is not None}
    assert released, "some cells must be released"
    for key, n in released.items():
        assert n == expect[key]
    # a pooled cell is suppressed only when some node suppressed it
    assert result.result.total == len(pooled)


def test_crosstab_frame_and_patients(stores):
    result = run_study(
        {"analysis": "crosstab", "by": ["sex", "country"], "unit": "patients"},
        InProcessTransport(stores),
    )
    frame = result.to_frame()
    pooled = pooled_view(stores)
    expect = pooled.groupby(["sex", "country"]).patient_id.nunique().unstack()
    assert (frame.loc["female", "FR"], frame.loc["male", "DE"]) == (
        expect.loc["female", "FR"],
        expect.loc["male", "DE"],
    )


def test_refusal_and_failure_are_reported(stores, tmp_path):
    (tmp_path / "it.policy.yaml").write_text(EXACT_YAML + "allowed_analyses: [crosstab]\n")
    spec = {"analysis": "count", "by": ["sex"], "min_nodes": 2}
    result = run_study(spec, InProcessTransport(stores))
    assert result.nodes["it"].status == "refused"
    assert "does not answer 'count'" in result.nodes["it"].reason
    assert result.result.total == 1000  # fr + de only


def test_local_node_failure_does_not_leak(stores):
    node = LocalNode(stores[0])
    bad = Task(task_id="t", study_id="s", round=0, analysis="count", params={"by": ["nope"]})
    ans = node.answer(bad)
    assert ans.status == "failed" and "nope" in ans.reason
    ans = node.answer(Task(task_id="t2", study_id="s2", round=0, analysis="martian"))
    assert ans.status == "failed" and "unknown analysis" in ans.reason
    assert node.audit.verify().seq == 2


def test_study_spec_errors_name_the_key(tmp_path):
    from ccdp.errors import SpecError

    bad = tmp_path / "s.yaml"
    bad.write_text("analysis: count\nby: [iccc_groop]\n")
    with pytest.raises(SpecError, match=r"by: .*iccc_groop"):
        load_study(bad)
    bad.write_text("analysis: count\ncohort: {sexx: male}\n")
    with pytest.raises(SpecError, match=r"cohort.*sexx"):
        load_study(bad)
    bad.write_text("analysis: count\ncovariates: [sex]\n")
    with pytest.raises(SpecError, match="covariates"):
        load_study(bad)


def test_ccdp_run_json_end_to_end(ccdp, stores, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text("title: feasibility\nanalysis: count\nby: [iccc_group]\n")
    out = ccdp("run", spec, "--store", stores[0], "--store", stores[1], "--json")
    data = json.loads(out.stdout)
    assert data["analysis"] == "count"
    assert data["nodes"] == {
        "fr": {"status": "answered", "reason": data["nodes"]["fr"]["reason"]},
        "de": {"status": "answered", "reason": data["nodes"]["de"]["reason"]},
    }
    assert data["result"]["total"] == 1000
    text = ccdp("run", spec, "--store", stores[0], "--store", stores[1]).stdout
    assert "feasibility" in text and "answered" in text


def test_min_nodes_and_node_selection(ccdp, stores, tmp_path):
    (tmp_path / "fr.policy.yaml").write_text(EXACT_YAML + "allowed_analyses: [km]\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("analysis: count\nmin_nodes: 3\n")
    proc = ccdp("run", spec, *[a for s in stores for a in ("--store", s)], "--json", check=False)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["result"] is None
    assert data["nodes"]["fr"]["status"] == "refused"
    spec.write_text("analysis: count\nnodes: [de, it]\n")
    data = json.loads(
        ccdp("run", spec, *[a for s in stores for a in ("--store", s)], "--json").stdout
    )
    assert set(data["nodes"]) == {"de", "it"} and data["result"]["total"] == 850


def test_min_nodes_defaults_to_every_node_named(ccdp, stores, tmp_path):
    (tmp_path / "fr.policy.yaml").write_text(EXACT_YAML + "allowed_analyses: [km]\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("analysis: count\n")
    proc = ccdp("run", spec, *[a for s in stores for a in ("--store", s)], "--json", check=False)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["result"] is None
    assert data["min_nodes"] == 3 and data["min_nodes_met"] is False
    assert "needs 3" in data["error"]
    spec.write_text("analysis: count\nnodes: [de, it]\n")
    data = json.loads(
        ccdp("run", spec, *[a for s in stores for a in ("--store", s)], "--json").stdout
    )
    assert data["min_nodes"] == 2 and data["min_nodes_met"] is True
    spec.write_text("analysis: count\nnodes: [de, it]\nmin_nodes: 3\n")
    proc = ccdp("run", spec, *[a for s in stores for a in ("--store", s)], check=False)
    assert proc.returncode != 0 and "min_nodes: 3 is more than the 2 node(s)" in proc.stderr


def test_crosstab_margins_are_released_and_protected(stores):
    res = run_study(
        {"analysis": "crosstab", "by": ["iccc_group", "sex"]}, InProcessTransport(stores)
    )
    pooled = pooled_view(stores)
    frame = res.to_frame()
    by_group = pooled.groupby("iccc_group").size()
    for m in res.result.margins["iccc_group"]:
        if m["n"] is not None:
            assert m["n"] == by_group[m["iccc_group"]]
            assert frame.loc[m["iccc_group"], "Total"] == m["n"]
    assert frame.loc["Total", "Total"] == len(pooled)
    # a suppressed inner cell shows as missing, never as zero
    for c in res.result.cells:
        if c["n"] is None:
            assert pd.isna(frame.loc[c["iccc_group"], c["sex"]])
    # and the report shows it as a dash with a note saying why
    suppressed = sum(c["n"] is None for c in res.result.cells)
    assert suppressed > 0
    table = frame_html(result_frame(res.result))
    assert table.count("<td>—</td>") >= suppressed
    assert "withheld by a node's disclosure control" in dash_note(res.result)


class TamperingTransport(InProcessTransport):
    """In-process nodes, one of whose answers is altered on the way: a faulty or hostile node."""

    def __init__(self, stores, victim: str) -> None:
        super().__init__(stores)
        self.victim = victim

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        answers = super().ask(task, nodes)
        sent = answers[self.victim]
        assert sent.summary is not None
        times = sent.summary["events"]["columns"]["time"]
        times[0] = float("nan")
        return answers


def test_a_malformed_summary_fails_its_node_and_the_others_still_pool(stores):
    result = run_study({"analysis": "km", "min_nodes": 2}, TamperingTransport(stores, "de"))
    assert result.nodes["de"].status == "failed"
    assert "node de sent a malformed summary" in (result.nodes["de"].reason or "")
    assert "column 'time': values must be" in (result.nodes["de"].reason or "")  # NaN: JSON null
    assert result.nodes["fr"].status == result.nodes["it"].status == "answered"
    assert result.result is not None


def test_spec_refuses_duplicate_nodes_and_absurd_timeouts() -> None:
    from ccdp.errors import SpecError
    from ccdp.federation.study import load_study

    with pytest.raises(SpecError, match="nodes: named more than once: FR"):
        load_study({"analysis": "count", "nodes": ["FR", "FR"]})
    with pytest.raises(SpecError, match="timeout"):
        load_study({"analysis": "count", "timeout": 1e308})
    with pytest.raises(SpecError, match=r"not a finite number|not a integer"):
        load_study({"analysis": "count", "cohort": {"diagnosis_year": {"from": float("inf")}}})

"""The notebook API returns the same result objects as `ccdp run`."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import matplotlib

import ccdp.api as api
from tests.storekit import build_store, random_registry

matplotlib.use("Agg")


def test_run_to_frame_and_plot(tmp_path):
    stores = [
        build_store(tmp_path / "a.duckdb", random_registry(1, 300, "FR", "a")),
        build_store(tmp_path / "b.duckdb", random_registry(2, 300, "DE", "b")),
    ]
    res = api.run({"analysis": "count", "by": ["sex"]}, stores=stores)
    assert res.result.total == 600 and set(res.nodes) == {"a", "b"}
    assert res.to_frame().n.sum() == 600
    inc = api.run({"analysis": "incidence"}, stores=stores, by=["country"])
    assert list(inc.to_frame().country) == ["DE", "FR"]
    assert inc.plot().axes
    km = api.run({"analysis": "km", "outcome": "os"}, stores=stores)
    assert km.plot() is not None and len(km.to_frame()) > 0
    assert (
        len(api.view(stores[0], {"sex": "female"})) == (api.view(stores[0]).sex == "female").sum()
    )
    assert "os_time" in set(api.variables().name)


def test_the_result_prints_as_ccdp_run_does(tmp_path):
    """`print(res)` is what `ccdp run` prints (result tables, then the nodes); `repr` one line;
    a notebook gets the same tables as HTML."""
    stores = [
        build_store(tmp_path / "a.duckdb", random_registry(1, 200, "FR", "a")),
        build_store(tmp_path / "b.duckdb", random_registry(2, 200, "DE", "b")),
    ]
    spec = tmp_path / "km.yaml"
    spec.write_text("title: OS by sex\nanalysis: km\noutcome: os\nby: [sex]\n")
    res = api.run(spec, stores=stores)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccdp",
            "run",
            str(spec),
            "-s",
            str(stores[0]),
            "-s",
            str(stores[1]),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"},
    )
    assert str(res) == cli.stdout.rstrip("\n")
    assert "Kaplan–Meier: Overall survival" in str(res) and "nodes" in str(res)
    subjects = sum(g.n for g in res.result.groups)
    assert repr(res) == (
        f"<Result km 'OS by sex': 2 of 2 nodes answered; <KMResult: 2 groups, {subjects} subjects>>"
    )
    page = res._repr_html_()
    assert page.count("<table>") == 3  # medians, landmarks, nodes
    assert f">{subjects - res.result.groups[1].n}<" in page and "OS by sex" in page
    assert list(res.to_frame().group) == ["female", "male"]
    assert len(res.to_frame(steps=True)) == sum(len(g.table) for g in res.result.groups)


def test_version_prints_the_package_version():
    proc = subprocess.run(
        [sys.executable, "-m", "ccdp", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"ccdp {importlib.metadata.version('ccdp')}\n"

"""The notebook API returns the same result objects as `ccdp run`."""

from __future__ import annotations

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

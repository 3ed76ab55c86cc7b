"""The CCDI Federation API at the hub: a real hub on loopback, real node stores (DuckDB) whose
catalogues the nodes compute through their gate and publish over HTTP; every count checked
against the feasibility tier's own answer (a `count ... unit: patients` task answered by the
node, perturbed) and never a count of 1 to min_cell - 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from ccdp.disclosure.policy import set_policy_value
from ccdp.exchange import ccdi
from ccdp.federation.client import HubClient
from ccdp.federation.node.catalogue import NodeCatalogue
from ccdp.federation.node.local import LocalNode
from ccdp.store.config import update_node_config
from ccdp.wire.protocol import Task
from tests.catalogue_kit import registry
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store

SPEC = Path(__file__).resolve().parents[2].parent / "shared/specs/ccdi-federation-api/swagger.yml"
# node: (patients, seed, policy counts); "it" publishes exact counts and is not served
NODES = {"fr": (200, 7, "perturbed"), "de_1": (150, 8, "perturbed"), "it": (120, 9, "exact")}
MIN_CELL = 5
SUBJECT_VARS = {"sex": "sex", "vital_status": "vital_status", "iccc_group": "iccc_group"}
SUBJECT_VARS["age_group"] = "age_group"


def _store(tmp: Path, name: str, n: int, seed: int, counts: str) -> Path:
    """A registry with small cells: 3 tumours of group XII (catalogue_kit) and 2 children of
    unknown sex and unknown vital status."""
    reg = registry(n, seed)
    for p in reg["patient"][:2]:
        p["sex"] = "unknown"
        p["vital_status"] = "unknown"
    store = build_store(tmp / f"{name}.duckdb", reg)
    update_node_config(store, pseudonym_key=f"{seed:02x}" * 32)
    set_policy_value(store, "counts", counts)
    return store


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("ccdi")
    stores = {k: _store(tmp, k, *v) for k, v in NODES.items()}
    with LiveHub(f"sqlite:///{tmp / 'hub.db'}", StandinExecutor()) as live:
        for name, store in stores.items():
            token = live.hub.add_node(name, name[:2].upper())
            body = NodeCatalogue(LocalNode(store, name=name)).publish().catalogue
            client = HubClient(live.url, token)
            client.publish_catalogue(body.model_dump(mode="json"))
            client.close()
        live.stores = stores
        yield live


def get(world: Any, path: str) -> httpx.Response:
    return httpx.get(f"{world.url}/ccdi{path}", timeout=30)


def tier(store: Path, name: str, by: list[str]) -> dict[str, Any]:
    """The feasibility tier's answer at the node: `count` by `by`, unit patients (perturbed)."""
    node = LocalNode(store, name=name)
    task = Task(
        task_id=f"t-{'-'.join(by)}",
        study_id=f"s-{'-'.join(by)}",
        round=0,
        analysis="count",
        params={"by": by, "unit": "patients"},
        cohort={},
        request={},
    )
    answer = node.answer(task)
    assert answer.status == "answered", answer.reason
    assert answer.summary is not None and "perturbed" in (answer.reason or "")
    return answer.summary


def served(world: Any) -> dict[str, Path]:
    return {k: v for k, v in world.stores.items() if NODES[k][2] == "perturbed"}


def sql(store: Path, query: str) -> Any:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(query).fetchall()[0][0]
    finally:
        con.close()


def numbers(body: Any) -> list[int]:
    """Every integer in a response body."""
    if isinstance(body, bool):
        return []
    if isinstance(body, int):
        return [body]
    if isinstance(body, dict):
        return [n for v in body.values() for n in numbers(v)]
    if isinstance(body, list):
        return [n for v in body for n in numbers(v)]
    return []


def test_subject_counts_equal_the_feasibility_tier(world: Any) -> None:
    for field, var in SUBJECT_VARS.items():
        spec = ccdi.SUBJECT_FIELDS[field]
        want: dict[str, int] = {}
        missing = 0
        for name, store in served(world).items():
            for cell in tier(store, name, [var])["cells"]["cells"]:
                value = spec.values.get(str(cell[var])) if cell[var] is not None else None
                if value is None:
                    missing += cell["n"]
                else:
                    want[value] = want.get(value, 0) + cell["n"]
        got = get(world, f"/subject/by/{field}/count").json()
        assert {v["value"]: v["count"] for v in got["values"]} == {
            k: n for k, n in want.items() if n
        }, field
        assert got["missing"] == missing, field
        assert got["total"] == sum(want.values()) + missing, field
    total = sum(tier(s, n, [])["total"]["cells"][0]["n"] for n, s in served(world).items())
    assert get(world, "/subject/summary").json() == {"counts": {"total": total}}


def test_sample_counts_are_the_published_specimen_cells(world: Any) -> None:
    want: dict[str, int] = {}
    for name in served(world):
        for cell in world.hub.catalogue(name)["catalogue"]["specimens"]:
            want[cell["type"]] = want.get(cell["type"], 0) + (cell["count"] or 0)
    got = get(world, "/sample/by/specimen_type/count").json()
    assert {v["value"]: v["count"] for v in got["values"]} == {k: n for k, n in want.items() if n}
    analyte = get(world, "/sample/by/specimen_molecular_analyte_type/count").json()
    assert {v["value"]: v["count"] for v in analyte["values"]} == {
        k.upper(): n for k, n in want.items() if k in ("dna", "rna") and n
    }
    assert analyte["total"] == got["total"] == sum(want.values())
    assert get(world, "/sample/summary").json()["counts"]["total"] == sum(want.values())


def test_the_exact_node_is_listed_but_never_counted(world: Any) -> None:
    spaces = get(world, "/namespace").json()
    assert [s["id"]["name"] for s in spaces] == ["de-1", "fr", "it"]
    it = get(world, "/namespace/ccdp/it").json()
    assert "does not serve" in it["description"]
    assert get(world, "/namespace/ccdp/nope").status_code == 404
    info = get(world, "/info").json()
    assert "shares no records" in info["data"]["version"]["about"]
    assert info["api"]["api_version"] == "v1.3.0"


def test_attack_many_queries_reveal_no_small_count_and_nothing_new(world: Any) -> None:
    """Every field in every spelling, repeated, summaries against counts: no count in
    1..min_cell - 1 appears, the same question always gets the same answer, and a by-field
    total is exactly the sum of its cells (no independently released total to difference)."""
    paths = ["/subject/summary", "/sample/summary", "/file/summary", "/info", "/namespace"]
    for field in [*ccdi.SUBJECT_FIELDS, "metadata.unharmonized.iccc_group", "race"]:
        paths.append(f"/subject/by/{field}/count")
    for field in [*ccdi.SAMPLE_FIELDS, "unharmonized.specimen_type", "diagnosis"]:
        paths.append(f"/sample/by/{field}/count")
    seen: dict[str, Any] = {}
    for _ in range(3):
        for path in paths:
            r = get(world, path)
            assert r.status_code < 500
            body = r.json()
            assert seen.setdefault(path, body) == body, path  # repeats gain nothing
            if "/by/" in path and r.status_code == 200:
                counts = [v["count"] for v in body["values"]]
                assert body["total"] == sum(counts) + body["missing"]
                assert all(c >= MIN_CELL for c in counts)
            if "/by/" in path or "summary" in path:
                small = [n for n in numbers(body) if 0 < n < MIN_CELL]
                assert not small, (path, small)
    # the stores do hold small cells to protect (2 children of unknown sex per node, 3 of
    # ICCC-3 group XII at fr), read from the stores themselves
    for store in served(world).values():
        assert sql(store, "SELECT count(*) FROM patient WHERE sex = 'unknown'") == 2
    assert sql(world.stores["fr"], "SELECT count(DISTINCT patient_id) FROM tumour "
               "WHERE iccc_group = 'XII'") == 3  # fmt: skip
    # differencing across endpoints gives exactly what differencing the tier's answers gives:
    # the summary minus the known sexes is the tier's total minus its cells, noise and all
    sex = {v["value"]: v["count"] for v in seen["/subject/by/sex/count"]["values"]}
    tier_gap = 0
    for name, store in served(world).items():
        answer = tier(store, name, ["sex"])
        known = sum(c["n"] for c in answer["cells"]["cells"] if c["sex"] != "unknown")
        tier_gap += answer["total"]["cells"][0]["n"] - known
    gap = seen["/subject/summary"]["counts"]["total"] - sex.get("M", 0) - sex.get("F", 0)
    assert gap == tier_gap
    # the unharmonized spelling reads the same cells
    assert (
        seen["/subject/by/iccc_group/count"]
        == seen["/subject/by/metadata.unharmonized.iccc_group/count"]
    )


def test_records_are_refused_as_the_spec_allows(world: Any) -> None:
    for path in ("/subject", "/sample", "/subject-diagnosis?search=x", "/sample-diagnosis"):
        r = get(world, path)
        assert r.status_code == 404, path
        (error,) = r.json()["errors"]
        assert error["kind"] == "UnshareableData" and error["message"]
    r = get(world, "/subject/ccdp/fr/P1")
    assert r.status_code == 404 and r.json()["errors"][0]["kind"] == "UnshareableData"
    files = get(world, "/file")
    assert files.status_code == 200 and files.json()["data"] == []
    assert 'rel="first"' in files.headers["link"]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/subject?page=x", "InvalidParameters"),
        ("/sample?per_page=-1", "InvalidParameters"),
        ("/file?page=-3", "InvalidParameters"),
        ("/subject/by/handedness/count", "UnsupportedField"),
        ("/subject/by/race/count", "UnsupportedField"),
        ("/sample/by/age_at_diagnosis/count", "UnsupportedField"),
        ("/file/by/nothing/count", "UnsupportedField"),
    ],
)
def test_bad_parameters_get_the_spec_error_body(world: Any, path: str, kind: str) -> None:
    r = get(world, path)
    assert r.status_code == 422
    (error,) = r.json()["errors"]
    assert error["kind"] == kind and error["message"]


def test_node_catalogue_patients_by_is_the_tier_answer(world: Any) -> None:
    """The catalogue's children-by cells are the very values the tier's count task releases."""
    for name, store in served(world).items():
        published = world.hub.catalogue(name)["catalogue"]["patients_by"]
        answer = tier(store, name, ["vital_status"])
        cells = {c["vital_status"]: c["n"] for c in answer["cells"]["cells"]}
        shown = {c["level"]: c["count"] for c in published["vital_status"] if c["count"]}
        assert shown == cells

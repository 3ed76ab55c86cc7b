"""Node catalogues: computed at the node through its gate, published to a real hub over HTTP,
by the CLI and by the node agent (at start and after each ingest, not under manual release)."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.policy import set_policy_value
from ccdp.federation.client import HubClient, HubRequestError
from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.catalogue import CatalogueWatch, NodeCatalogue
from ccdp.federation.node.local import LocalNode
from ccdp.wire.catalogue import TOP_LEVEL_KEYS, Catalogue
from tests.catalogue_kit import ingest_child, make_store
from tests.conftest import run_ccdp
from tests.federation.netutil import LiveHub, wait_until
from tests.federation.standin import StandinExecutor

KEYS = {
    "node",
    "country",
    "generated_at",
    "last_ingest",
    "policy",
    "patients",
    "tumours",
    "tables",
    "diagnosis_years",
    "by_iccc_group",
    "by_sex",
    "by_age_group",
    "patients_by",
    "follow_up",
    "specimens",
    "quality",
}


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "fr.duckdb")


def sql(store, query):
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def cells(catalogue: dict, key: str) -> dict:
    return {c["level"]: c for c in catalogue[key]}


def test_catalogue_counts_equal_direct_sql_where_released(store):
    cat = NodeCatalogue.for_store(store).compute().catalogue.model_dump(mode="json")
    assert set(cat) == KEYS == set(TOP_LEVEL_KEYS)
    assert cat["node"] == "fr" and cat["country"] == "FR"
    assert cat["last_ingest"].startswith("2026-01-01T10:00")
    assert cat["patients"] == {"count": sql(store, "SELECT count(*) FROM patient")[0][0],
                               "suppressed": False}  # fmt: skip
    assert cat["tumours"]["count"] == sql(store, "SELECT count(*) FROM tumour")[0][0]
    by_group = dict(sql(store, "SELECT iccc_group, count(*) FROM tumour GROUP BY 1"))
    by_sex = dict(
        sql(
            store,
            "SELECT p.sex, count(*) FROM tumour t JOIN patient p USING (patient_id) GROUP BY 1",
        )
    )
    view = LocalNode(store).read_view(["age_group"], CohortSpec())
    by_age = view["age_group"].value_counts().to_dict()
    for key, truth in (("by_iccc_group", by_group), ("by_sex", by_sex), ("by_age_group", by_age)):
        for level, cell in cells(cat, key).items():
            if not cell["suppressed"]:
                assert cell["count"] == truth.get(level, 0), (key, level)
    rows = {t["name"]: t for t in cat["tables"]}
    for name in ("patient", "tumour", "event", "trial_enrolment", "specimen", "population"):
        assert rows[name]["rows"] == sql(store, f"SELECT count(*) FROM {name}")[0][0], name
    assert [c["level"] for c in cat["by_iccc_group"]][:12] == [
        "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
    ]  # fmt: skip
    specimens = {c["type"]: c for c in cat["specimens"]}
    assert specimens["bone_marrow"] == {"type": "bone_marrow", "count": 0, "suppressed": False}
    assert cat["follow_up"]["released"] and cat["follow_up"]["median_years"] > 0
    assert cat["quality"]["score"] == 100.0
    assert cat["policy"]["min_cell"] == 5 and cat["policy"]["release"] == "automatic"
    Catalogue.model_validate(cat)


def test_a_small_group_is_suppressed_and_so_is_its_complement(store):
    cat = NodeCatalogue.for_store(store).compute().catalogue.model_dump(mode="json")
    xii = cells(cat, "by_iccc_group")["XII"]
    assert xii == {**xii, "count": None, "suppressed": True}  # 3 tumours: 1..min_cell-1
    total = cat["tumours"]["count"]
    assert total is not None
    hidden = [c["level"] for c in cat["by_iccc_group"] if c["suppressed"]]
    assert "XII" in hidden and len(hidden) >= 2
    # the total minus the released cells is a sum, not the one cell: the other hidden cells hold
    # tumours in the store, so the margin (which equals the hidden cells' true sum) is not 3
    truth = dict(sql(store, "SELECT iccc_group, count(*) FROM tumour GROUP BY 1"))
    released = sum(c["count"] for c in cat["by_iccc_group"] if not c["suppressed"])
    assert total - released == sum(truth.get(level, 0) for level in hidden)
    assert total - released > truth["XII"] == 3
    specimens = {c["type"]: c for c in cat["specimens"]}
    assert specimens["csf"]["suppressed"] and specimens["csf"]["count"] is None
    # the table's 12 rows are released, so dna (10) would give csf away: suppressed too
    assert specimens["dna"]["suppressed"] is True
    assert {t["name"]: t for t in cat["tables"]}["specimen"]["rows"] == 12


def test_the_cli_prints_the_catalogue_as_json(store):
    out = run_ccdp("node", "catalogue", "--store", store, "--json").stdout
    cat = json.loads(out)
    assert set(cat) == KEYS
    assert cat["tumours"]["count"] == 200
    text = run_ccdp("node", "catalogue", "--store", store).stdout
    assert "catalogue of node fr" in text and "reverse Kaplan-Meier" in text
    assert AuditLog.for_store(store).records() == []  # printing publishes nothing


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        hub.tokens = {
            "fr": hub.hub.add_node("fr", "FR"),
            "de": hub.hub.add_node("de", "DE"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "bo": hub.hub.add_user("bo", "board"),
        }
        yield hub


def test_hub_stores_catalogues_and_guards_the_route(live, store):
    computed = NodeCatalogue.for_store(store).publish()
    body = computed.catalogue.model_dump(mode="json")
    records = AuditLog.for_store(store).records()
    assert records[-1]["analysis"] == "catalogue" and records[-1]["summary"] == body
    with live.client(live.tokens["fr"]) as c:
        r = c.put("/api/node/catalogue", json=body)
        assert r.status_code == 200, r.text
        assert c.put("/api/node/catalogue", json={**body, "node": "de"}).status_code == 403
        bad = {**body, "patients": {"count": -1, "suppressed": False}}
        assert c.put("/api/node/catalogue", json=bad).status_code == 422
        assert c.put("/api/node/catalogue", json={"node": "fr"}).status_code == 422
        assert c.put("/api/node/catalogue", json={**body, "extra": 1}).status_code == 422
        assert c.put("/api/node/catalogue", content=b"[1, 2").status_code in (400, 422)
    with live.client(live.tokens["de"]) as c:
        assert c.put("/api/node/catalogue", json=body).status_code == 403  # not de's
    with live.client(live.tokens["ana"]) as c:
        assert c.put("/api/node/catalogue", json=body).status_code == 403
        listed = c.get("/api/catalogues").json()
        assert [e["node"] for e in listed] == ["fr"]
        assert listed[0]["country"] == "FR" and listed[0]["catalogue"] == body
        assert c.get("/api/catalogues/fr").json()["catalogue"] == body
        assert c.get("/api/catalogues/de").status_code == 404
        nodes = {n["name"]: n for n in c.get("/api/nodes").json()}
        assert nodes["fr"]["catalogue"]["patients"] == 200
        assert nodes["fr"]["catalogue"]["last_ingest"] == body["last_ingest"]
        assert nodes["de"]["catalogue"] is None
    with live.client(live.tokens["bo"]) as c:
        assert c.get("/api/catalogues").status_code == 200
    with live.client() as c:
        assert c.get("/api/catalogues").status_code == 401
        assert c.put("/api/node/catalogue", json=body).status_code == 401
    actions = [r["action"] for r in live.hub.audit_log()]
    assert "catalogue.published" in actions and "catalogue.refused" in actions
    assert live.hub.verify_audit().ok
    client = HubClient(live.url, live.tokens["ana"])
    assert client.catalogues("fr")["node"] == "fr"
    with pytest.raises(HubRequestError, match="403"):
        client.publish_catalogue(body)
    client.close()


def test_cli_publishes_to_the_hub(live, store):
    run_ccdp(
        "node", "catalogue", "--store", store, "--publish", "--hub", live.url,
        "--token", live.tokens["fr"],
    )  # fmt: skip
    got = live.hub.catalogue("fr")
    assert got["catalogue"]["tumours"]["count"] == 200


def run_agent(live, store, events):
    node = LocalNode(store, name="fr")
    agent = NodeAgent(live.url, live.tokens["fr"], node.answer, wait=0.2, on_event=events.append)
    agent.catalogue = CatalogueWatch(
        lambda: node,
        lambda: node.policy.release == "manual",
        events.append,
        hub_url=live.url,
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    return agent, stop, thread


def test_agent_publishes_at_start_and_after_a_new_ingest(live, store):
    events: list[str] = []
    agent, stop, thread = run_agent(live, store, events)
    try:
        first = wait_until(lambda: _published(live))
        assert first["catalogue"]["last_ingest"].startswith("2026-01-01T10:00")
        for i in range(5):  # five children: the refresh rule lets the figures move
            ingest_child(store, pid=f"NEW{i}")
        second = wait_until(
            lambda: (p := _published(live)) and p["catalogue"]["last_ingest"] != first[
                "catalogue"]["last_ingest"] and p
        )  # fmt: skip
        assert second["catalogue"]["tumours"]["count"] == 205
    finally:
        stop.set()
        thread.join(10)
        agent.close()
    assert sum("published the catalogue" in e for e in events) == 2


def test_agent_does_not_publish_under_manual_release(live, store):
    set_policy_value(store, "release", "manual")
    events: list[str] = []
    agent, stop, thread = run_agent(live, store, events)
    try:
        wait_until(lambda: any("waits for the custodian" in e for e in events))
        ingest_child(store)
        wait_until(lambda: sum("waits for the custodian" in e for e in events) == 2)
        assert _published(live) is None
    finally:
        stop.set()
        thread.join(10)
        agent.close()
    assert AuditLog.for_store(store).records() == []


def _published(live):
    try:
        return live.hub.catalogue("fr")
    except Exception:
        return None


@pytest.mark.postgres
def test_hub_keeps_the_latest_catalogue_on_postgres(store):
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.context import Forbidden
    from ccdp.federation.hub.db import open_database
    from tests.federation.pg import temporary_database

    computed = NodeCatalogue.for_store(store).compute()
    with temporary_database() as url:
        hub = Hub(open_database(url))
        me = hub.authenticate(hub.add_node("fr", "FR"))
        de = hub.authenticate(hub.add_node("de", "DE"))
        assert me is not None and de is not None
        hub.publish_catalogue(me, computed.catalogue)
        later = computed.catalogue.model_copy(update={"country": None})
        hub.publish_catalogue(me, later)
        listed = hub.catalogues()
        assert len(listed) == 1 and listed[0]["catalogue"]["country"] is None
        with pytest.raises(Forbidden):
            hub.publish_catalogue(de, computed.catalogue)  # de publishing fr's
        assert hub.verify_audit().ok
        hub.sessions.kw["bind"].dispose()

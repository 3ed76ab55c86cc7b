"""The hub's audit log, over a real hub on loopback and direct edits of its database: the chain
verifies after real actions (`ccdp hub audit --verify`), finds an edited, removed, reordered or
cut-off record by its seq, does not fork under concurrent appends (SQLite and PostgreSQL, threads
and processes), never holds a token, and chains the records of a database written before it.
The board's view of refusals lists each study's refused and withheld answers per project."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import make_engine, migrate, open_database
from ccdp.wire.protocol import Answer, Task
from tests.conftest import cli_env, run_ccdp
from tests.federation.netutil import LiveHub
from tests.federation.standin import ForwardingHub, StandinExecutor
from tests.federation.test_hub_api import answer, submit, wait_open_task

CLI = (sys.executable, "-m", "ccdp")


def _live(url: str, hub_class: type[Hub] = Hub) -> Iterator[LiveHub]:
    with LiveHub(url, StandinExecutor(), hub_class=hub_class) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "B": hub.hub.add_node("B", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
        }
        yield hub


@pytest.fixture
def live(tmp_path) -> Iterator[LiveHub]:
    yield from _live(f"sqlite:///{tmp_path / 'hub.db'}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request, tmp_path, monkeypatch) -> Iterator[LiveHub]:
    if request.param == "sqlite":
        yield from _live(f"sqlite:///{tmp_path / 'hub.db'}")
        return
    from tests.federation.pg import temporary_database

    monkeypatch.setenv(hub_audit.ENV_KEY, str(tmp_path / "pg.audit.key"))
    with temporary_database() as url:
        yield from _live(url)


def run_study(live: LiveHub) -> str:
    """A researcher's study answered by both nodes over HTTP, and its result read."""
    sid = submit(live, rounds=1, timeout=30)
    task_a, task_b = wait_open_task(live, "A"), wait_open_task(live, "B")
    with live.client(live.tokens["A"]) as c:
        assert c.post("/api/node/answers", json=answer(task_a, "A", 5.0)).status_code == 200
    with live.client(live.tokens["B"]) as c:
        assert c.post("/api/node/answers", json=answer(task_b, "B", 2.0)).status_code == 200
    with live.client(live.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 10}).json()
    assert study["status"] == "done" and study["result"]["result"]["total"] == 7.0
    return sid


def real_actions(live: LiveHub) -> str:
    sid = run_study(live)
    with live.client(live.tokens["root"]) as c:
        assert c.post("/api/admin/users", json={"name": "bea"}).status_code == 201
        assert c.post("/api/admin/users/bea/revoke").status_code == 200
    with live.client(live.tokens["ana"]) as c:  # a submission the hub refuses
        assert c.post("/api/studies", json={"spec": {"rounds": "many"}}).status_code == 422
    return sid


def verify_json(db_url: str) -> tuple[int, dict]:
    proc = run_ccdp("hub", "audit", "--verify", "--json", "--db", db_url, check=False)
    return proc.returncode, json.loads(proc.stdout)


def audit_lines(db_url: str) -> list[dict]:
    proc = run_ccdp("hub", "audit", "--json", "--db", db_url)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_chain_verifies_after_real_actions_and_records_each_of_them(live) -> None:
    sid = real_actions(live)
    code, out = verify_json(live.db_url)
    records = audit_lines(live.db_url)
    assert code == 0 and out["ok"] is True and out["first_bad_seq"] is None
    assert out["records"] == len(records) and out["head"]["seq"] == len(records)
    assert out["anchor"] == out["head"]  # the head file followed every commit
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    did = {(r["actor"], r["action"]) for r in records}
    assert {
        ("admin", "add-node"),
        ("admin", "add-user"),
        ("ana", "submit-study"),
        ("hub", "study-started"),
        ("hub", "open-round"),
        ("node:A", "answer"),
        ("node:B", "answer"),
        ("hub", "study-done"),
        ("ana", "read-result"),
        ("root", "add-user"),
        ("root", "revoke-user"),
        ("ana", "submit-study-refused"),
    } <= did
    read = next(r for r in records if r["action"] == "read-result")
    assert read["detail"] == {"study": sid, "status": "done", "role": "researcher"}
    refused = next(r for r in records if r["action"] == "submit-study-refused")
    assert "rounds" in refused["detail"]["reason"]
    # the human form and the admin route say the same
    text = run_ccdp("hub", "audit", "--verify", "--db", live.db_url).stdout
    assert f"intact: {len(records)} record(s)" in text
    with live.client(live.tokens["root"]) as c:
        assert c.get("/api/admin/audit/verify").json()["ok"] is True
        newest = c.get("/api/admin/audit", params={"limit": 1}).json()
        assert newest[0]["seq"] == len(records)  # the GET itself is not a change: not logged
    with live.client(live.tokens["ana"]) as c:
        assert c.get("/api/admin/audit/verify").status_code == 403


def _swap(con: sqlite3.Connection, a: int, b: int) -> None:
    con.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
    con.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
    con.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))


def _cut_and_fix_head_row(con: sqlite3.Connection, n: int) -> None:
    """The tail cut and the audit_head row set back to match: only the head file still knows."""
    con.execute("DELETE FROM audit WHERE seq > ?", (n - 2,))
    last = con.execute("SELECT hash FROM audit WHERE seq = ?", (n - 2,)).fetchone()[0]
    con.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (n - 2, last))


TAMPER = {
    "edited detail": (
        lambda con, n: con.execute(
            "UPDATE audit SET detail = ? WHERE seq = 3", (json.dumps({"name": "mallory"}),)
        ),
        lambda n: 3,
        "record 3 was altered",
    ),
    "edited actor": (
        lambda con, n: con.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 5"),
        lambda n: 5,
        "record 5 was altered",
    ),
    "deleted": (
        lambda con, n: con.execute("DELETE FROM audit WHERE seq = 4"),
        lambda n: 4,
        "record 4 has seq 5",
    ),
    "swapped": (lambda con, n: _swap(con, 2, 3), lambda n: 2, "record 2 does not follow"),
    "tail cut": (
        lambda con, n: con.execute("DELETE FROM audit WHERE seq > ?", (n - 2,)),
        lambda n: n - 1,
        "cut off",
    ),
    "tail cut, head row reset": (
        _cut_and_fix_head_row,
        lambda n: n - 1,
        "the head file",
    ),
}


@pytest.mark.parametrize("how", list(TAMPER))
def test_verify_fails_naming_the_first_bad_seq(live, tmp_path, how) -> None:
    real_actions(live)
    n = len(audit_lines(live.db_url))
    assert n > 8
    edit, bad_seq, why = TAMPER[how]
    con = sqlite3.connect(tmp_path / "hub.db")
    with con:
        edit(con, n)
    con.close()
    code, out = verify_json(live.db_url)
    assert code == 1 and out["ok"] is False, out
    assert out["first_bad_seq"] == bad_seq(n), out
    assert why in out["reason"], out
    proc = run_ccdp("hub", "audit", "--verify", "--db", live.db_url, check=False)
    assert proc.returncode == 1
    assert f"broken at seq {bad_seq(n)}" in proc.stderr and why in proc.stderr


def test_an_edited_head_file_fails(live, tmp_path) -> None:
    run_study(live)
    head = tmp_path / "hub.audit.head"
    body = json.loads(head.read_text())
    head.write_text(json.dumps({**body, "seq": body["seq"] + 5}))
    proc = run_ccdp("hub", "audit", "--verify", "--db", live.db_url, check=False)
    assert proc.returncode != 0 and "head was altered" in proc.stderr


def test_concurrent_appends_do_not_fork_the_chain(any_db) -> None:
    """Threads over HTTP and separate CLI processes append at once; every seq is taken once and
    the chain verifies."""
    live = any_db
    before = len(audit_lines(live.db_url))
    errors: list[str] = []
    gate = threading.Barrier(16)

    def add(i: int) -> None:
        with live.client(live.tokens["root"]) as c:
            gate.wait()
            r = c.post("/api/admin/users", json={"name": f"user{i}"})
            if r.status_code != 201:
                errors.append(r.text)

    procs = [
        subprocess.Popen(
            [*CLI, "hub", "add-node", f"N{i}", "--country", "IT", "--db", live.db_url],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert errors == []
    records = audit_lines(live.db_url)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len(records) == before + 16 + 3
    code, out = verify_json(live.db_url)
    assert code == 0 and out["ok"], out


def test_tokens_never_appear_in_the_log(live, tmp_path) -> None:
    real_actions(live)
    with live.client(live.tokens["root"]) as c:
        issued = c.post("/api/admin/nodes", json={"name": "C", "country": "PL"}).json()["token"]
    # a submission that would make the hub quote a token in its refusal
    with live.client(live.tokens["ana"]) as c:
        r = c.post("/api/studies", json={"spec": {"rounds": live.tokens["ana"]}})
        assert r.status_code == 422
    tokens = [*live.tokens.values(), issued]
    con = sqlite3.connect(tmp_path / "hub.db")
    dump = "\n".join(con.iterdump())
    con.close()
    audit_text = "\n".join(line for line in dump.splitlines() if 'INTO "audit' in line)
    assert audit_text
    for token in tokens:
        assert token not in audit_text
        assert token not in json.dumps(audit_lines(live.db_url))
    assert "ccdp-user-" not in audit_text and "ccdp-node-" not in audit_text
    assert "[token withheld]" in audit_text  # the refusal was logged, its token blanked
    key = (tmp_path / "hub.audit.key").read_text().strip()
    assert key not in dump and (tmp_path / "hub.audit.key").stat().st_mode & 0o777 == 0o600


def test_upgrade_chains_the_records_written_before(tmp_path) -> None:
    """A hub database at revision 0002 with audit records is chained by the upgrade."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table

    from ccdp.federation.hub.db import MIGRATIONS
    from ccdp.wire.protocol import utcnow

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    old = Table(
        "audit",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True)),
        Column("actor", String),
        Column("action", String),
        Column("detail", JSON),
    )
    with engine.begin() as conn:
        for i in range(5):
            conn.execute(
                insert(old).values(
                    at=utcnow(), actor="admin", action="add-user", detail={"name": f"u{i}"}
                )
            )
    engine.dispose()
    hub = Hub(open_database(url))
    hub.add_user("after", "researcher")
    outcome = hub.verify_audit()
    assert outcome.ok, outcome.error
    assert outcome.records == 6 and outcome.anchor is not None and outcome.anchor.seq == 6
    log = hub.audit_log()
    assert [r["detail"]["name"] for r in reversed(log)] == ["u0", "u1", "u2", "u3", "u4", "after"]
    code, out = verify_json(url)
    assert code == 0 and out["records"] == 6


def test_a_missing_key_with_records_is_refused_naming_the_file(live, tmp_path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (tmp_path / "hub.audit.key").rename(kept / "hub.audit.key")
    (tmp_path / "hub.audit.head").rename(kept / "hub.audit.head")
    proc = run_ccdp("hub", "audit", "--verify", "--db", live.db_url, check=False)
    assert proc.returncode == 2
    assert "hub.audit.key is missing" in proc.stderr and "record(s)" in proc.stderr
    assert not (tmp_path / "hub.audit.key").exists()  # no new key was made over the old log
    ok = run_ccdp(
        "hub", "audit", "--verify", "--db", live.db_url, "--audit-key", kept / "hub.audit.key"
    )
    assert "intact" in ok.stdout


def test_migrations_need_no_key_for_an_empty_log(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)  # no chain given: nothing to chain
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT seq, hash FROM audit_head").all() == [(0, "0" * 64)]


# ---- the board's view of refusals ------------------------------------------------------------
def _project_study(live: LiveHub, project: str | None, answers: dict[str, Answer | None]) -> str:
    """A study of `project` (in its spec) whose round the nodes answer over HTTP."""
    spec = {"title": f"study of {project}", "rounds": 1}
    if project is not None:
        spec["project"] = project
    hub = live.hub
    sid = hub.create_study(
        spec,
        analysis="rounds",
        title=spec["title"],
        nodes=["A", "B"],
        min_nodes=1,
        timeout=30,
        owner=None,
    )
    hub.set_study_status(sid, "running")
    task = Task(task_id=uuid.uuid4().hex, study_id=sid, round=0, analysis="rounds", params={})
    hub.open_round(sid, 0, task, ["A", "B"], 30)
    for node, ans in answers.items():
        open_task = wait_open_task(live, node)
        if ans is None:
            body = answer(open_task, node, 1.0)
        else:
            body = ans.model_copy(update={"task_id": open_task["task_id"]}).model_dump(mode="json")
        with live.client(live.tokens[node]) as c:
            assert c.post("/api/node/answers", json=body).status_code == 200, body
    return sid


DIFF = (
    "total: the answer would differ from an earlier release of this node by fewer than 5 "
    "records (differencing rule)"
)


@pytest.fixture
def forwarding(tmp_path) -> Iterator[LiveHub]:
    """A hub that admits studies of any named project (its project check is not under test)."""
    yield from _live(f"sqlite:///{tmp_path / 'hub.db'}", ForwardingHub)


def test_the_board_sees_refusals_per_project(forwarding) -> None:
    live = forwarding
    refused = Answer(task_id="x", node="B", status="refused", reason=DIFF)
    withheld = Answer(
        task_id="x",
        node="A",
        status="answered",
        reason="s: 1 group(s) withheld by the differencing rule",
        summary={"s": {"kind": "aggregate", "n": 9, "n_params": 1, "values": {"sum": 1.0}}},
    )
    p1 = _project_study(live, "P1", {"A": withheld, "B": refused})
    _project_study(live, "P2", {"A": None, "B": refused})
    _project_study(live, "P3", {"A": None, "B": None})  # nothing refused: not listed
    run_study(live)  # no project, nothing refused
    rows = json.loads(run_ccdp("hub", "refusals", "--json", "--db", live.db_url).stdout)
    assert [r["project"] for r in rows] == ["P1", "P2"]
    first = rows[0]
    assert first["study"] == p1 and first["requester"] == "admin"
    assert first["nodes"] == [
        {
            "node": "A",
            "round": 0,
            "status": "answered",
            "withheld": True,
            "reason": withheld.reason,
            "late": False,
        },
        {
            "node": "B",
            "round": 0,
            "status": "refused",
            "withheld": False,
            "reason": DIFF,
            "late": False,
        },
    ]
    only = json.loads(
        run_ccdp("hub", "refusals", "--project", "P2", "--json", "--db", live.db_url).stdout
    )
    assert [r["project"] for r in only] == ["P2"] and len(only[0]["nodes"]) == 1
    text = run_ccdp("hub", "refusals", "--project", "P1", "--db", live.db_url).stdout
    assert "project P1" in text and "node B round 0: refused: " + DIFF in text
    assert "node A round 0: withheld: s: 1 group(s)" in text
    none = run_ccdp("hub", "refusals", "--project", "P9", "--db", live.db_url).stdout
    assert "no refusals" in none
    with live.client(live.tokens["root"]) as c:
        r = c.get("/api/board/refusals", params={"project": "P1"})
        # the hub's lease keeper may meanwhile take up these hand-made running studies and end
        # them: their status moves, the refusals do not
        assert r.status_code == 200 and _but_status(r.json()) == _but_status(rows[:1])


def _but_status(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "status"} for row in rows]
    with live.client(live.tokens["ana"]) as c:
        r = c.get("/api/board/refusals")
        assert r.status_code == 403 and "board" in r.json()["detail"]


def test_key_locations(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(hub_audit.ENV_KEY, raising=False)
    assert hub_audit.key_path_for(f"sqlite:///{tmp_path / 'h.db'}") == tmp_path / "h.audit.key"
    assert hub_audit.key_path_for("sqlite://") is None
    monkeypatch.setenv(hub_audit.ENV_KEY, str(tmp_path / "k.key"))
    assert hub_audit.key_path_for("postgresql://u@h/db") == tmp_path / "k.key"
    assert hub_audit.head_path_for(tmp_path / "k.key") == tmp_path / "k.head"
    assert hub_audit.key_path_for("x", Path("/a/b.key")) == Path("/a/b.key")

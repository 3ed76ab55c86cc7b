"""The linkage service over real HTTP on loopback: its doors (tokens, roles, a node outside a
run), every malformed request answered 4xx with a reason (never 500), and a small run whose
groups, keep flags and deletions are checked against pairs built by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ccdp.federation.linkage import core
from tests.linkage.linkwire_kit import SECRET, LiveService

CHILDREN = pd.DataFrame(
    [
        # registry A                                                 (name, birth, sex)
        ("a1", "Zofia", "Wójcik", "2008-03-14", "female"),
        ("a2", "Jonas", "Müller", "2011-11-02", "male"),
        ("a3", "Amani", "Otieno", "2005-07-30", "female"),
        # registry B: a1 transliterated, a2 with the umlaut spelt out, one other child
        ("b1", "Zofia", "Wojcik", "2008-03-14", "female"),
        ("b2", "Jonas", "Mueller", "2011-11-02", "male"),
        ("b3", "Luca", "Bianchi", "2009-01-21", "male"),
    ],
    columns=["patient_id", "given_name", "family_name", "birth_date", "sex"],
)
YEARS = {"a1": 2015, "a2": 2016, "a3": 2012, "b1": 2014, "b2": 2016, "b3": 2018}


def _upload(rows: pd.DataFrame, **over: Any) -> dict[str, Any]:
    enc = core.encode_frame(rows.reset_index(drop=True), SECRET)
    records = [
        {
            "p": hashlib.sha256(pid.encode()).hexdigest()[:32],
            "clk": base64.b64encode(enc.clk(i)).decode(),
        }
        for i, pid in enumerate(rows["patient_id"])
    ]
    body = {
        "schema_id": core.schema_id(),
        "secret_id": core.secret_id(SECRET),
        "bits": enc.bits,
        "records": records,
    }
    return body | over


def _p(pid: str) -> str:
    return hashlib.sha256(pid.encode()).hexdigest()[:32]


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    with LiveService(tmp_path, max_upload=256 * 1024) as s:
        s.tokens = {n: s.token(n) for n in ("A", "B", "C")}  # type: ignore[attr-defined]
        s.admin = s.token("boss", "admin")  # type: ignore[attr-defined]
        yield s


def _refused(r: Any, status: int, words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert words in r.json()["detail"], r.json()


def test_doors(svc: Any) -> None:
    with svc.http() as anon:
        _refused(anon.post("/api/admin/runs", json={}), 401, "missing bearer token")
    with svc.http("ccdp-node-not-a-token") as bad:
        _refused(bad.get("/api/node/runs/r1"), 401, "unknown or revoked token")
    with svc.http(svc.tokens["A"]) as node:
        body = {"run_id": "r1", "nodes": ["A", "B"]}
        _refused(node.post("/api/admin/runs", json=body), 403, "cannot be used on user routes")
    with svc.http(svc.admin) as admin:
        _refused(admin.get("/api/node/runs/r1"), 403, "cannot be used on node routes")


def test_bad_requests_are_4xx_with_a_reason(svc: Any) -> None:
    with svc.http(svc.admin) as admin:
        ok = {"run_id": "r1", "nodes": ["A", "B"], "threshold": 0.8}
        for bad, status, words in (
            (ok | {"run_id": "r 1"}, 422, "run_id"),
            (ok | {"threshold": 2}, 422, "threshold"),
            (ok | {"nodes": ["A"]}, 422, "nodes"),
            (ok | {"nodes": ["A", "A"]}, 422, "named twice"),
            (ok | {"extra": 1}, 422, "extra"),
            (ok | {"nodes": ["A", "Z"]}, 404, "no node named Z"),
        ):
            _refused(admin.post("/api/admin/runs", json=bad), status, words)
        headers = {"content-type": "application/json"}
        _refused(admin.post("/api/admin/runs", content=b"{nope", headers=headers), 400, "JSON")
        nan = b'{"run_id": "r1", "nodes": ["A", "B"], "threshold": NaN}'
        _refused(admin.post("/api/admin/runs", content=nan, headers=headers), 422, "finite")
        text = {"content-type": "text/plain"}
        _refused(admin.post("/api/admin/runs", content=b"x", headers=text), 415, "JSON")
        assert admin.post("/api/admin/runs", json=ok).status_code == 201
        _refused(admin.post("/api/admin/runs", json=ok), 409, "exists already")
        _refused(admin.get("/api/admin/runs/nope"), 404, "no run")
        _refused(admin.get("/api/admin/runs/a..b%20c"), 422, "run_id")
    a_rows = CHILDREN[CHILDREN.patient_id.str.startswith("a")]
    good = _upload(a_rows)
    rec = good["records"][0]
    with svc.http(svc.tokens["A"]) as node:
        url = "/api/node/runs/r1/clks"
        for bad, status, words in (
            (good | {"records": [rec | {"clk": "!!!!"}]}, 400, "not base64"),
            (good | {"records": [rec | {"clk": "AAAA"}]}, 400, "bytes, but bits"),
            (good | {"records": [rec | {"p": "P" * 32}]}, 422, "p"),
            (good | {"records": [rec, rec]}, 400, "appears twice"),
            (good | {"records": [rec | {"year": 2010}]}, 422, "year"),
            (good | {"bits": 1000}, 422, "bits"),
            (good | {"secret_id": "not hex"}, 422, "secret_id"),
            (good | {"records": [rec] * 3000}, 413, "too large"),
        ):
            _refused(node.post(url, json=bad), status, words)
        _refused(node.get("/api/node/runs/r1/groups"), 409, "not linked yet")
        years = {"records": [{"p": rec["p"], "year": 2010}]}
        _refused(node.post("/api/node/runs/r1/years", json=years), 409, "takes no years")
        _refused(node.get("/api/node/runs/r1?wait=99"), 422, "wait")
        _refused(node.get("/api/node/runs/nope"), 404, "no run")
        assert node.post(url, json=good).status_code == 200
        _refused(node.post(url, json=good), 409, "uploaded to run 'r1' already")
    with svc.http(svc.tokens["B"]) as node_b:
        other = _upload(CHILDREN[CHILDREN.patient_id.str.startswith("b")], schema_id="other:1")
        _refused(node_b.post("/api/node/runs/r1/clks", json=other), 409, "schema")
    with svc.http(svc.tokens["C"]) as outsider:
        for r in (
            outsider.get("/api/node/runs/r1"),
            outsider.post("/api/node/runs/r1/clks", json=good),
            outsider.get("/api/node/runs/r1/groups"),
            outsider.post("/api/node/runs/r1/confirm"),
        ):
            _refused(r, 403, "not in run 'r1'")


def test_a_small_run_by_hand(svc: Any) -> None:
    with svc.http(svc.admin) as admin:
        assert admin.post("/api/admin/runs", json={"run_id": "r1", "nodes": ["A", "B"]}).is_success
    a = svc.http(svc.tokens["A"])
    b = svc.http(svc.tokens["B"])
    with a, b:
        a_rows = CHILDREN[CHILDREN.patient_id.str.startswith("a")]
        b_rows = CHILDREN[CHILDREN.patient_id.str.startswith("b")]
        assert a.post("/api/node/runs/r1/clks", json=_upload(a_rows)).json()["state"] == "uploading"
        # the last upload returns at once: the service links in its worker
        assert b.post("/api/node/runs/r1/clks", json=_upload(b_rows)).json()["state"] in (
            "linking",
            "linked",
        )
        assert a.get("/api/node/runs/r1?wait=20").json()["state"] == "linked"
        tables = svc.tables()
        assert tables["linkage_clks"] == []  # deleted in the transaction that linked
        ga = {r["p"]: r for r in a.get("/api/node/runs/r1/groups").json()["records"]}
        gb = {r["p"]: r for r in b.get("/api/node/runs/r1/groups").json()["records"]}
        # each node sees its own records only: the two true pairs, nothing else; no keep yet
        assert set(ga) == {_p("a1"), _p("a2")} and set(gb) == {_p("b1"), _p("b2")}
        assert ga[_p("a1")]["group"] == gb[_p("b1")]["group"]
        assert ga[_p("a2")]["group"] == gb[_p("b2")]["group"]
        assert ga[_p("a1")]["group"] != ga[_p("a2")]["group"]
        assert all(r["size"] == 2 and r["keep"] is None for r in [*ga.values(), *gb.values()])
        # the years of the linked records only: a3 (linked to nothing) is refused
        years_url = "/api/node/runs/r1/years"
        three = {"records": [{"p": _p(x), "year": YEARS[x]} for x in ("a1", "a2", "a3")]}
        _refused(a.post(years_url, json=three), 400, "no other")
        two = {"records": [{"p": _p(x), "year": YEARS[x]} for x in ("a1", "a2")]}
        bad_year = {"records": [{"p": _p("a1"), "year": 1066}, {"p": _p("a2"), "year": 2016}]}
        _refused(a.post(years_url, json=bad_year), 422, "year")
        bad_last = {"records": [{"p": _p("a1"), "year": 2015, "last": 99}, two["records"][1]]}
        _refused(a.post(years_url, json=bad_last), 422, "last")
        assert a.post(years_url, json=two).json()["wait"] is True
        _refused(a.post(years_url, json=two), 409, "has sent its years")
        _refused(a.post("/api/node/runs/r1/confirm"), 409, "nothing to confirm")
        b_two = {"records": [{"p": _p(x), "year": YEARS[x]} for x in ("b1", "b2")]}
        assert b.post(years_url, json=b_two).json()["state"] == "ready"
        ga = {r["p"]: r for r in a.get("/api/node/runs/r1/groups").json()["records"]}
        gb = {r["p"]: r for r in b.get("/api/node/runs/r1/groups").json()["records"]}
        # keep: the earlier diagnosis (b1: 2014 before a1: 2015); a tie (a2, b2: 2016) goes to
        # the node whose name has the smaller HMAC under the run's random tie key
        assert gb[_p("b1")]["keep"] and not ga[_p("a1")]["keep"]
        con = sqlite3.connect(svc.db)
        tie_key = bytes.fromhex(con.execute("SELECT tie_key FROM linkage_runs").fetchone()[0])
        con.close()
        first = min("AB", key=lambda n: hmac.digest(tie_key, n.encode(), "sha256"))
        assert ga[_p("a2")]["keep"] is (first == "A") and gb[_p("b2")]["keep"] is (first == "B")
        assert a.post("/api/node/runs/r1/confirm").json()["state"] == "ready"
        assert svc.tables()["linkage_results"] != []  # B's, until B confirms
        assert b.post("/api/node/runs/r1/confirm").json()["state"] == "done"
        _refused(a.get("/api/node/runs/r1/groups"), 409, "confirmed")
    assert svc.tables()["linkage_results"] == []


def _tie_key(db: Path, run_id: str) -> bytes:
    con = sqlite3.connect(db)
    row = con.execute("SELECT tie_key FROM linkage_runs WHERE id = ?", [run_id]).fetchone()
    con.close()
    return bytes.fromhex(row[0])


@pytest.mark.parametrize("other_last", [2017, None])
def test_a_tie_of_diagnosis_years_keeps_the_copy_followed_longest(
    svc: Any, other_last: int | None
) -> None:
    """Among the copies with the earliest diagnosis year, the one with the later last-contact
    year is kept, whichever node the run's random tie key favours (the favoured node's copy
    gets the earlier, or an unknown, last contact); the earlier diagnosis still comes first,
    however long the later copy was followed."""
    with svc.http(svc.admin) as admin:
        assert admin.post("/api/admin/runs", json={"run_id": "r1", "nodes": ["A", "B"]}).is_success
    favoured = min("AB", key=lambda n: hmac.digest(_tie_key(svc.db, "r1"), n.encode(), "sha256"))
    last = {"a1": 2023, "b1": 2015}  # a1: diagnosed a year later, followed 8 years longer
    longest = "b2" if favoured == "A" else "a2"
    last |= {longest: 2022, ({"a2", "b2"} - {longest}).pop(): other_last}
    a = svc.http(svc.tokens["A"])
    b = svc.http(svc.tokens["B"])
    with a, b:
        for node, prefix in ((a, "a"), (b, "b")):
            rows = CHILDREN[CHILDREN.patient_id.str.startswith(prefix)]
            assert node.post("/api/node/runs/r1/clks", json=_upload(rows)).is_success
        assert svc.wait_state("r1", "linked") == "linked"
        for node, prefix in ((a, "a"), (b, "b")):
            recs = [
                {"p": _p(x), "year": YEARS[x], "last": last[x]}
                for x in (f"{prefix}1", f"{prefix}2")
            ]
            assert node.post("/api/node/runs/r1/years", json={"records": recs}).is_success
        keep = {
            pid: r["keep"]
            for node in (a, b)
            for r in node.get("/api/node/runs/r1/groups").json()["records"]
            for pid in CHILDREN.patient_id
            if _p(pid) == r["p"]
        }
    assert keep == {"a1": False, "b1": True, longest: True, ({"a2", "b2"} - {longest}).pop(): False}


def test_the_audit_chain_catches_an_edit(svc: Any) -> None:
    with svc.http(svc.admin) as admin:
        assert admin.post("/api/admin/runs", json={"run_id": "r1", "nodes": ["A", "B"]}).is_success
        assert admin.get("/api/admin/audit").json()["verified"]["ok"] is True
        con = sqlite3.connect(svc.db)
        con.execute("UPDATE audit SET detail = '{\"run\": \"r2\"}' WHERE action LIKE 'linkage%'")
        con.commit()
        con.close()
        verified = admin.get("/api/admin/audit").json()["verified"]
    assert verified["ok"] is False and verified["first_bad_seq"] is not None

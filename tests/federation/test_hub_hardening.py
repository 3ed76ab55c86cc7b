"""The hub refuses malformed requests with a 4xx that names the problem, never a 500: bodies it
cannot hold (lone surrogates, non-finite or huge numbers, deep nesting, not JSON), bodies over
their limit (declared or streamed), unknown routes; and its refusals never echo the input."""

from __future__ import annotations

import json
import socket

import pytest

from tests.federation.clock import FakeClock
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.federation.test_hub_api import answer, submit, time_runs_out, wait_open_task

SMALL, LARGE = 4096, 65536  # the test hub's body limits (the defaults are 1 and 16 MiB)


@pytest.fixture
def live(tmp_path):
    executor = StandinExecutor()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(url, executor, max_body=SMALL, max_answer_body=LARGE) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "B": hub.hub.add_node("B", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
        }
        yield hub


def post_raw(hub: LiveHub, path: str, token: str, text: str | bytes, **headers: str):
    """POST `text` as it is (json= would refuse to write a lone surrogate or NaN)."""
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    with hub.client(hub.tokens[token]) as c:
        return c.post(path, content=body, headers={"content-type": "application/json", **headers})


def raw_http(port: int, head: str, chunks: list[bytes] = ()) -> tuple[int, dict]:
    """Send a request head and then `chunks` over a plain socket; return status and JSON body.
    The socket lets a test declare a length it never sends, or stream without declaring one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the hub stopped reading: fine
                break
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected(data):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _expected(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data) + 1


def test_a_lone_surrogate_is_a_422_naming_its_path(live):
    r = post_raw(live, "/api/studies", "ana", '{"spec": {"title": "ok \\ud800 no"}}')
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "spec", "title"]
    assert "lone surrogate" in r.json()["detail"]
    r = post_raw(live, "/api/studies", "ana", '{"spec": {"ti\\udfffle": 1}}')
    assert r.status_code == 422 and "key holds a lone surrogate" in r.json()["detail"]


@pytest.mark.parametrize(
    ("text", "loc", "why"),
    [
        ('{"spec": {"timeout": NaN}}', ["body", "spec", "timeout"], "got NaN"),
        ('{"spec": {"timeout": -Infinity}}', ["body", "spec", "timeout"], "got -Infinity"),
        (
            '{"spec": {"cohort": {"diagnosis_year": [1e400]}}}',
            ["body", "spec", "cohort", "diagnosis_year", 0],
            "1e400 overflows to infinity",
        ),
        ('{"spec": {"rounds": ' + "9" * 400 + "}}", ["body", "spec", "rounds"], "400 digits"),
        ('{"spec": {"rounds": 9223372036854775808}}', ["body", "spec", "rounds"], "64-bit"),
    ],
)
def test_numbers_the_hub_cannot_hold_are_a_422_naming_their_path(live, text, loc, why):
    r = post_raw(live, "/api/studies", "ana", text)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"loc": loc, "msg": r.json()["errors"][0]["msg"]}]
    assert why in r.json()["errors"][0]["msg"] and why in r.json()["detail"]


def test_a_huge_audit_seq_is_a_422_not_a_database_overflow(live):
    """A 2**70 seq passed the model (an int >= 0) and overflowed SQLite's INTEGER: a 500."""
    body = json.dumps({"audit_head": {"seq": 2**70, "hash": "a" * 64}})
    r = post_raw(live, "/api/node/heartbeat", "A", body)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "audit_head", "seq"]
    ok = post_raw(
        live, "/api/node/heartbeat", "A", json.dumps({"audit_head": {"seq": 3, "hash": "a" * 64}})
    )
    assert ok.status_code == 200 and ok.json()["audit_head"]["seq"] == 3


def test_text_that_is_not_json_is_a_400_saying_where(live):
    r = post_raw(live, "/api/studies", "ana", '{"spec": {"rounds": 1,}}')
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"] and "column 23" in r.json()["detail"]
    r = post_raw(live, "/api/studies", "ana", b'{"spec": "\xff"}')
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"]
    r = post_raw(live, "/api/studies", "ana", "spec=1", **{"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_deep_nesting_is_a_422(live):
    for depth in (100, 2000):  # within the parser's stack, and past it
        r = post_raw(live, "/api/studies", "ana", '{"spec": ' + "[" * depth + "]" * depth + "}")
        assert r.status_code == 422 and "nested more than 64" in r.json()["detail"], depth


def test_a_body_over_its_declared_limit_is_a_413_before_it_is_read(live):
    """The head declares 100 MB and no byte of it is sent: the hub answers without waiting."""
    head = (
        "POST /api/studies HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {live.tokens['ana']}\r\ncontent-length: {100 * 2**20}\r\n\r\n"
    )
    status, body = raw_http(live.port, head)
    assert status == 413 and f"limit for this route is {SMALL} bytes" in body["detail"]
    assert "declares 104857600 bytes" in body["detail"]


def test_a_streamed_body_over_its_limit_is_a_413(live):
    """Chunked, with no length declared: refused once the bytes received pass the limit."""
    head = (
        "POST /api/studies HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {live.tokens['ana']}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    text = json.dumps({"spec": {"title": "x" * (4 * SMALL)}}).encode()
    pieces = [text[i : i + 1000] for i in range(0, len(text), 1000)]
    chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    status, body = raw_http(live.port, head, chunks)
    assert status == 413 and "while streaming" in body["detail"]
    small = json.dumps({"spec": {"title": "streamed", "rounds": 1}}).encode()
    status, body = raw_http(live.port, head, [b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)])
    assert status == 201, body


def test_answers_have_the_larger_limit(live):
    submit(live, rounds=1, timeout=30)
    task = wait_open_task(live, "A")
    good = answer(task, "A", 5.0)
    padded = {**good, "reason": "r" * (2 * SMALL)}  # over the small limit, under the large
    with live.client(live.tokens["A"]) as c:
        assert c.post("/api/node/answers", json=padded).json()["status"] == "accepted"
        huge = {**good, "reason": "r" * (2 * LARGE)}
        r = c.post("/api/node/answers", json=huge)
    assert r.status_code == 413 and f"{LARGE} bytes" in r.json()["detail"]
    with live.client(live.tokens["ana"]) as c:
        r = c.post("/api/studies", json={"spec": {"title": "t" * (2 * SMALL)}})
    assert r.status_code == 413 and f"{SMALL} bytes" in r.json()["detail"]


def test_refusals_never_echo_the_input(live):
    secret = "s3cr3t-" + "x" * 2000
    with live.client(live.tokens["root"]) as c:
        r = c.post("/api/admin/nodes", json={"name": secret, "country": "DE"})
        wrong_type = c.post("/api/admin/users", json={"name": ["not", secret]})
    for resp in (r, wrong_type):
        assert resp.status_code == 422
        assert "s3cr3t" not in resp.text and len(resp.text) < 1000
        body = resp.json()
        assert set(body) == {"detail", "errors"} and body["detail"].startswith("body.name")
        assert all(set(e) == {"loc", "msg"} for e in body["errors"])
    assert r.json()["errors"][0]["loc"] == ["body", "name"]


def test_unknown_routes_and_methods_are_json_4xx(live):
    with live.client(live.tokens["ana"]) as c:
        missing = c.get("/api/nothing-here")
        wrong = c.delete("/api/studies")
    assert missing.status_code == 404 and missing.json()["detail"] == "no route /api/nothing-here"
    assert wrong.status_code == 405 and "DELETE is not allowed" in wrong.json()["detail"]


def test_path_and_query_values_with_surrogates_are_4xx(live):
    with live.client(live.tokens["ana"]) as c:
        # percent-encoded CESU-8 of \ud800: not UTF-8, so never decoded into a lone surrogate
        assert c.get("/api/studies/%ED%A0%80").status_code == 404
        assert c.get("/api/studies/x?wait=%ED%A0%80").status_code == 422
        assert c.get("/api/studies/x?wait=1e400").status_code == 422
    with live.client(live.tokens["root"]) as c:
        r = c.get("/api/admin/audit", params={"limit": "1" + "0" * 400})
        assert r.status_code == 422 and "limit" in r.json()["detail"]


def test_hub_serve_takes_the_body_limits_from_its_options(tmp_path):
    from tests.federation.netutil import HubProcess, ccdp_args

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    proc = HubProcess(db, tmp_path / "hub.log")
    proc.args = ccdp_args("hub", "serve", "--db", db, "--port", proc.port, "--max-body-mib", "0.5")
    head = "POST /api/studies HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    try:
        proc.start()
        status, body = raw_http(proc.port, head + f"content-length: {2**20}\r\n\r\n")
        assert status == 413 and "limit for this route is 524288 bytes (0.5 MiB)" in body["detail"]
        text = json.dumps({"spec": {"title": "x" * 2**18}}).encode()
        status, body = raw_http(proc.port, head + f"content-length: {len(text)}\r\n\r\n", [text])
        assert status == 401, body  # within the limit: on to the route, which wants a token
    finally:
        proc.stop()


# ---- node answers checked on receipt against the task's analysis -------------------------------
def count_summary(f: int, m: int) -> dict:
    """A count-by-sex summary as a node's gate releases it."""
    return {
        "cells": {
            "kind": "counts",
            "dims": ["sex"],
            "counts": ["n"],
            "cells": [{"sex": "F", "n": f}, {"sex": "M", "n": m}],
            "withheld": 0,
        },
        "total": {"kind": "counts", "dims": [], "counts": ["n"], "cells": [{"n": f + m}]},
    }


def _part(name: str, **change) -> dict:
    good = count_summary(12, 10)
    return {**good, name: {**good[name], **change}}


GARBAGE = {  # a summary a node might post, and what its refusal must say
    "whole number >= 0": _part("cells", cells=[{"sex": "F", "n": -3}, {"sex": "M", "n": 10}]),
    "cell 1, count n must be a whole number": _part(
        "cells", cells=[{"sex": "F", "n": 3}, {"sex": "M", "n": 2.5}]
    ),
    "cell 0 lacks n": _part("cells", cells=[{"sex": "F"}]),
    "lacks part(s) total": {"cells": count_summary(1, 2)["cells"]},
    "dims must be ['sex']": _part("cells", dims=["age"], cells=[{"age": 3, "n": 4}]),
    "of kind aggregate, expected counts": {
        **count_summary(1, 2),
        "total": {"kind": "aggregate", "n": 3, "n_params": 0, "values": {}},
    },
    "does not send: pickle": {**count_summary(1, 2), "pickle": count_summary(1, 2)["total"]},
    "needs a summary with at least one part": {},
    "n_params must be a whole number": {
        "m": {"kind": "aggregate", "n": 3, "n_params": "1", "values": {}}
    },
}


@pytest.fixture
def counting(tmp_path):
    from ccdp.federation.hub.studies import SpecExecutor

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(url, SpecExecutor(), clock=FakeClock()) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "B": hub.hub.add_node("B", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
        }
        yield hub


def post_summary(hub: LiveHub, node: str, task: dict, summary: dict):
    body = {"task_id": task["task_id"], "node": node, "status": "answered", "summary": summary}
    with hub.client(hub.tokens[node]) as c:
        return c.post("/api/node/answers", json=body)


def test_garbage_answers_are_422_not_stored_and_the_task_stays_open(counting):
    sid = submit(counting, analysis="count", by=["sex"], timeout=60)
    task_a, task_b = wait_open_task(counting, "A"), wait_open_task(counting, "B")
    for why, summary in GARBAGE.items():
        r = post_summary(counting, "B", task_b, summary)
        assert r.status_code == 422 and why in r.json()["detail"], (why, r.text)
        assert r.json()["errors"][0]["loc"] == ["body"]
    assert not [e for e in counting.hub.audit_log() if e["action"] == "answer"]
    with counting.client(counting.tokens["B"]) as c:  # still B's open task
        assert c.get(f"/api/node/tasks/{task_b['task_id']}").status_code == 200
    assert post_summary(counting, "B", task_b, count_summary(5, 6)).json()["status"] == "accepted"
    assert post_summary(counting, "A", task_a, count_summary(12, 10)).status_code == 200
    with counting.client(counting.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 20}).json()
    assert study["status"] == "done", study
    assert study["result"]["result"]["total"] == 33
    assert study["result"]["nodes"]["B"]["status"] == "answered"


def test_a_node_that_posts_only_garbage_does_not_fail_the_study(counting):
    # a long timeout that the test lets run out once A has answered: no race with a short one
    sid = submit(counting, analysis="count", by=["sex"], timeout=3600, min_nodes=1)
    task_a, task_b = wait_open_task(counting, "A"), wait_open_task(counting, "B")
    assert post_summary(counting, "B", task_b, GARBAGE["whole number >= 0"]).status_code == 422
    assert post_summary(counting, "A", task_a, count_summary(12, 10)).status_code == 200
    time_runs_out(counting, 3601)
    with counting.client(counting.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["status"] == "done", study
    assert study["result"]["result"]["total"] == 22 and study["result"]["min_nodes_met"]
    assert study["result"]["nodes"]["B"]["status"] == "failed"


# ---- every route against hostile input: a 4xx, never a 500 ------------------------------------
HOSTILE_VALUES = [
    None,
    True,
    -1,
    2**63 - 1,
    1.5,
    "",
    "x" * 3000,
    "\u0000",
    "../../etc/passwd",
    [],
    [[[["deep"]]]],
    {},
    {"a": {"b": {"c": None}}},
]
HOSTILE_TEXTS = [  # bodies json= cannot write
    "NaN",
    '{"spec": {"title": "\\ud800"}}',
    '{"spec": {"timeout": 1e400}}',
    "1" + "0" * 400,
    "[" * 1000 + "]" * 1000,
    '{"spec": ' + '{"a": ' * 60 + "1" + "}" * 60 + "}",  # within the depth limit: to the route
    "{",
    "",
]
PLAUSIBLE = {  # a body of the right shape for each route, whose every field is then spoiled
    "/api/studies": {
        "spec": {
            "analysis": "count",
            "by": ["sex"],
            "title": "t",
            "cohort": {"diagnosis_year": {"min": 2000}},
            "timeout": 5,
            "nodes": ["A"],
            "min_nodes": 1,
        }
    },
    "/api/node/answers": {
        "task_id": "t",
        "node": "A",
        "status": "answered",
        "summary": count_summary(1, 2),
        "audit_head": {"seq": 1, "hash": "a" * 64},
    },
    "/api/node/heartbeat": {"audit_head": {"seq": 1, "hash": "a" * 64}},
    "/api/admin/nodes": {"name": "C", "country": "IT", "public_key": None},
    "/api/admin/users": {"name": "u", "role": "researcher"},
    "/api/admin/import": {"format": "x", "node": "A", "task": {}, "answer": {}, "signature": "s"},
}
QUERIES = ["wait=-1", "wait=nan", "wait=1e400", "wait=x", "limit=0", "limit=1" + "0" * 40, "x=1"]


def spoiled(body: object, depth: int = 0):
    """`body` with each field in turn (to depth 2) replaced by each hostile value."""
    if not isinstance(body, dict) or depth > 2:
        return
    for key, value in body.items():
        for bad in HOSTILE_VALUES:
            yield {**body, key: bad}
        for inner in spoiled(value, depth + 1):
            yield {**body, key: inner}


def _routes():
    from fastapi.routing import APIRoute

    from ccdp.federation.hub.app import create_app
    from ccdp.federation.hub.studies import SpecExecutor
    from ccdp.web.dashboard import mount_dashboard

    app = create_app(None, SpecExecutor(), dashboard=mount_dashboard)  # type: ignore[arg-type]  # routes only, never served
    return sorted(
        (m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()
    )


@pytest.mark.parametrize(("method", "path"), _routes())
def test_every_route_answers_hostile_input_with_a_4xx(counting, method, path):
    counting.tokens["root"] = counting.hub.add_user("root", "admin")
    token = "A" if path.startswith("/api/node") else "root"
    url = path.replace("{task_id}", "nope").replace("{study_id}", "nope").replace("{name}", "B")
    bodies = [*HOSTILE_VALUES, *spoiled(PLAUSIBLE.get(path, {}))]
    seen: list[tuple[int, str]] = []
    with counting.client(counting.tokens[token]) as c:
        for q in QUERIES:
            r = c.request(method, f"{url}?{q}")
            seen.append((r.status_code, q))
        if method == "POST":
            for body in bodies:
                r = c.request(method, url, json=body)
                seen.append((r.status_code, json.dumps(body)[:80]))
            for text in HOSTILE_TEXTS:
                r = c.request(
                    method,
                    url,
                    content=text.encode("utf-8", "surrogatepass"),
                    headers={"content-type": "application/json"},
                )
                seen.append((r.status_code, text[:80]))
                if r.status_code >= 400 and path.startswith("/api/"):
                    assert r.json()["detail"], text[:80]  # pages answer with an HTML page
    assert [s for s in seen if s[0] >= 500] == []

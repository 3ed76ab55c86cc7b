"""The hub's audit chain stays one chain when two processes append to it at once (issue 27):
audit.py serialises appends on the `audit_head` row, which on PostgreSQL is a row lock every
worker's transaction waits for. Two real processes each append 40 records as fast as they can
(each waits halfway until the other has appended, so that they surely overlap); the chain
walks, its seqs run 1..N without a gap or a repeat, and each writer's records keep its order."""

from __future__ import annotations

import textwrap
from itertools import pairwise
from pathlib import Path

from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.audit import records
from ccdp.federation.hub.db import open_database
from tests.federation.netutil import processes, spawn, wait_until
from tests.federation.pg import temporary_database

PER_WRITER = 40

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ccdp.federation.hub.db import open_database
    db, key, go, tag, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    sessions = open_database(db, key)
    while not go.exists():
        time.sleep(0.01)
    from sqlalchemy import func, select
    from ccdp.federation.hub.audit import append
    from ccdp.federation.hub.models import AuditRow
    other = "w1" if tag == "w2" else "w2"
    for k in range(n):
        if k == n // 2:  # halfway, until the other has appended too: on a loaded machine one
            until = time.monotonic() + 60  # could otherwise finish before the other starts
            while time.monotonic() < until:
                with sessions() as s:
                    mine = select(func.count()).where(AuditRow.actor == other)
                    if s.scalar(mine):
                        break
                time.sleep(0.01)
        with sessions.begin() as s:
            append(s, tag, "probe", {"k": k})
    print("done", flush=True)
    """
)


def test_two_processes_appending_at_once_keep_one_ordered_chain(tmp_path: Path) -> None:
    key = tmp_path / "hub.audit.key"
    go = tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with temporary_database() as db, processes() as procs:
        hub = Hub(open_database(db, key))
        before = len(records(hub.sessions))
        for tag in ("w1", "w2"):
            args = [str(script), db, str(key), str(go), tag, str(PER_WRITER)]
            procs.append(spawn(args, tmp_path / f"{tag}.log"))
        go.touch()  # both start appending at the same moment
        wait_until(lambda: all(p.poll() is not None for p in procs), 120, 0.1)
        assert [p.returncode for p in procs] == [0, 0], [
            (tmp_path / f"{t}.log").read_text() for t in ("w1", "w2")
        ]
        recs = records(hub.sessions)
        assert [r["seq"] for r in recs] == list(range(1, before + 2 * PER_WRITER + 1))
        for tag in ("w1", "w2"):
            ks = [r["detail"]["k"] for r in recs if r["actor"] == tag]
            assert ks == list(range(PER_WRITER)), tag
        # the two writers really interleaved (they ran at once, not one after the other)
        actors = [r["actor"] for r in recs if r["actor"] in ("w1", "w2")]
        switches = sum(1 for a, b in pairwise(actors) if a != b)
        assert switches >= 2, actors
        verified = hub.verify_audit()
        assert verified.ok, verified.to_json()
        assert verified.head.seq == before + 2 * PER_WRITER
        hub.context.sessions.kw["bind"].dispose()

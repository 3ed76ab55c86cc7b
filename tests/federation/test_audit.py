"""The node's audit log: appends chain to the last record however large the log or the record."""

from __future__ import annotations

import json

import pytest

from ccdp.federation.audit import GENESIS, TAIL_BLOCK, AuditError, AuditLog


def test_chain_holds_across_records_larger_than_the_tail_block(tmp_path) -> None:
    log = AuditLog(tmp_path / "n.audit.jsonl")
    first = log.append({"event": "answer", "summary": "x" * (3 * TAIL_BLOCK)})
    second = log.append({"event": "answer", "summary": "small"})
    third = log.append({"event": "answer", "summary": "y" * (TAIL_BLOCK - 10)})
    assert first["prev"] == GENESIS
    assert second["prev"] == first["hash"] and third["prev"] == second["hash"]
    assert [r["seq"] for r in log.records()] == [1, 2, 3]
    assert log.verify().seq == 3


def test_trailing_blank_lines_do_not_break_the_chain(tmp_path) -> None:
    log = AuditLog(tmp_path / "n.audit.jsonl")
    a = log.append({"event": "answer"})
    with log.path.open("a") as fh:
        fh.write("\n\n  \n")
    b = log.append({"event": "refused"})
    assert b["seq"] == 2 and b["prev"] == a["hash"]
    assert log.verify().seq == 2


def test_a_damaged_last_record_is_refused_not_chained_past(tmp_path) -> None:
    log = AuditLog(tmp_path / "n.audit.jsonl")
    log.append({"event": "answer"})
    with log.path.open("a") as fh:
        fh.write('{"seq": 2, "trunc')
    before = log.path.read_bytes()
    with pytest.raises(AuditError, match="last record is not JSON"):
        log.append({"event": "answer"})
    assert log.path.read_bytes() == before


def test_an_edited_record_is_found_by_verify(tmp_path) -> None:
    log = AuditLog(tmp_path / "n.audit.jsonl")
    for i in range(3):
        log.append({"event": "answer", "total": i})
    lines = log.path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["total"] = 99
    lines[1] = json.dumps(rec, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match="record 2 was altered"):
        log.verify()

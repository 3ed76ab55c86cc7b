"""The node's audit log: appends chain to the last record however large the log or the record;
keyed records and the head beside the log catch edits, cuts, deletions and reordering."""

from __future__ import annotations

import json

import pytest

from ccdp.federation.node.audit import (
    GENESIS,
    TAIL_BLOCK,
    AuditError,
    AuditLog,
    _sha256,
    audit_path,
    record_mac,
)
from ccdp.wire.protocol import AuditHead


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


# ---- keyed records and the head beside the log ---------------------------------------------
KEY = bytes(range(32))


def _log_with(tmp_path, n: int = 3) -> AuditLog:
    log = AuditLog(tmp_path / "n.audit.jsonl", KEY)
    for i in range(n):
        log.append({"event": "answer", "total": i})
    return log


def _rewrite(log: AuditLog, edit, digest, start: int = 0) -> None:
    """Apply `edit` to the records, then recompute the chain from record `start` + 1 on with
    `digest`, as a forger would."""
    records = log.records()
    edit(records)
    prev = records[start - 1]["hash"] if start else GENESIS
    for rec in records[start:]:
        rec["prev"] = prev
        rec["hash"] = prev = digest(rec)
    log.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def test_records_are_keyed_and_the_head_follows_every_append(tmp_path) -> None:
    log = _log_with(tmp_path, 2)
    recs = log.records()
    assert recs[1]["hash"] == record_mac(KEY, recs[1]) != _sha256(recs[1])
    assert log.head() == AuditHead(seq=2, hash=recs[1]["hash"])
    assert log.verify() == log.head()
    assert KEY.hex() not in log.path.read_text() + log.head_path.read_text()
    assert not list(tmp_path.glob("*.tmp"))  # the head was written atomically


def test_a_log_without_records_has_head_zero(tmp_path) -> None:
    assert AuditLog(tmp_path / "n.audit.jsonl", KEY).verify() == AuditHead(seq=0, hash=GENESIS)


def test_the_key_comes_from_the_node_config_private_and_stable(tmp_path) -> None:
    from ccdp.store.config import load_node_config, node_config_path

    store = tmp_path / "site.duckdb"
    log = AuditLog.for_store(store)
    first = log.append({"event": "answer"})
    key = load_node_config(store)["audit_key"]
    assert len(bytes.fromhex(key)) == 32
    assert node_config_path(store).stat().st_mode & 0o777 == 0o600
    assert key not in log.path.read_text()
    again = AuditLog.for_store(store)
    assert again.verify().hash == first["hash"]
    assert AuditLog(audit_path(store), bytes(32)).records()  # another key reads the records...
    with pytest.raises(AuditError, match="HMAC mismatch"):  # ...but cannot vouch for them
        AuditLog(audit_path(store), bytes(32)).verify()


def test_a_log_cut_short_fails(tmp_path) -> None:
    log = _log_with(tmp_path)
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:2]))
    with pytest.raises(AuditError, match=r"2 record.* head says 3 \(cut short or rolled back"):
        log.verify()


def test_a_deleted_or_emptied_log_fails(tmp_path) -> None:
    log = _log_with(tmp_path)
    log.path.write_text("")
    with pytest.raises(AuditError, match="log is empty but its head says 3"):
        log.verify()
    log.path.unlink()
    with pytest.raises(AuditError, match="log is missing but its head says 3"):
        log.verify()


def test_a_log_whose_head_was_deleted_or_edited_fails(tmp_path) -> None:
    log = _log_with(tmp_path)
    body = json.loads(log.head_path.read_text())
    log.head_path.write_text(json.dumps({**body, "seq": 2}))
    with pytest.raises(AuditError, match="head was altered"):
        log.verify()
    log.head_path.unlink()
    with pytest.raises(AuditError, match="head is missing"):
        log.verify()


def test_an_edit_with_the_chain_recomputed_by_plain_sha256_fails_the_hmac(tmp_path) -> None:
    log = _log_with(tmp_path)

    def edit(records):
        records[1]["total"] = 99

    _rewrite(log, edit, _sha256, start=1)
    assert log.records()[2]["prev"] == _sha256(log.records()[1])  # the chain itself holds
    with pytest.raises(AuditError, match=r"record 2 was altered \(HMAC mismatch\)"):
        log.verify()


def test_an_edit_recomputed_with_the_key_passes_locally_not_against_the_hubs_head(
    tmp_path,
) -> None:
    log = _log_with(tmp_path)
    anchored = log.verify()  # what the hub was sent

    def edit(records):
        records[1]["total"] = 99

    _rewrite(log, edit, lambda r: record_mac(KEY, r))
    last = log.records()[-1]
    log._write_head(last["seq"], last["hash"])  # the key holder rewrites the head too
    assert log.verify().seq == 3  # locally consistent
    with pytest.raises(AuditError, match="record 3 differs from the head the hub holds"):
        log.check_against(anchored)


def test_a_rolled_back_copy_passes_locally_not_against_the_hub(tmp_path) -> None:
    log = _log_with(tmp_path, 2)
    saved = log.path.read_bytes(), log.head_path.read_bytes()
    log.append({"event": "answer", "total": 5})
    anchored = log.verify()
    log.path.write_bytes(saved[0])
    log.head_path.write_bytes(saved[1])
    assert log.verify().seq == 2
    with pytest.raises(AuditError, match="hub holds head 3 but the log has 2"):
        log.check_against(anchored)
    assert log.check_against(AuditHead(seq=1, hash=log.records()[0]["hash"])).seq == 2


def test_seq_gaps_and_reordering_fail(tmp_path) -> None:
    log = _log_with(tmp_path)
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text(lines[0] + lines[2] + lines[1])
    with pytest.raises(AuditError, match="record 2 has seq 3"):
        log.verify()
    log.path.write_text("".join(lines))

    def gap(records):
        records[2]["seq"] = 4

    _rewrite(log, gap, lambda r: record_mac(KEY, r))
    with pytest.raises(AuditError, match="record 3 has seq 4"):
        log.verify()


def test_an_old_unkeyed_log_is_named_as_such(tmp_path) -> None:
    log = _log_with(tmp_path)
    _rewrite(log, lambda records: None, _sha256)
    with pytest.raises(AuditError, match=r"plain SHA-256.*older ccdp"):
        log.verify()


def test_append_reads_only_the_tail(tmp_path, monkeypatch) -> None:
    """O(1) in the log's size: after a 3 MB record, appending reads one tail block, no more."""
    log = _log_with(tmp_path, 1)
    log.append({"event": "answer", "summary": "x" * (3 << 20)})
    log.append({"event": "answer", "summary": "small"})
    read = [0]
    real = log._last

    class Counting:
        def __init__(self, fh) -> None:
            self.fh = fh

        def seek(self, *a):
            return self.fh.seek(*a)

        def read(self, n):
            data = self.fh.read(n)
            read[0] += len(data)
            return data

    monkeypatch.setattr(log, "_last", lambda fh: real(Counting(fh)))
    log.append({"event": "answer"})
    assert 0 < read[0] <= TAIL_BLOCK
    assert log.verify().seq == 4

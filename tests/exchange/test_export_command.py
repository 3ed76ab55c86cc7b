"""`ccdp export` as a custodian runs it: each export logged in the node's audit (what, where,
how many; never a record), an earlier export kept unless --replace, a clear one-line error for
a store that is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccdp.federation.node.audit import AuditLog
from tests.conftest import run_ccdp


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cmd")
    run_ccdp("synth", root / "synth", "--countries", "KE", "--patients", "120", "--seed", "5")
    path = root / "ke.duckdb"
    run_ccdp("ingest", root / "synth" / "KE", "--store", path, "--json")
    return path


def test_each_export_is_in_the_node_audit_without_a_record(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "pp"
    before = len(AuditLog.for_store(store).records())
    proc = run_ccdp("export", "phenopackets", "--store", store, "--out", out, "--json")
    manifest = json.loads(proc.stdout)
    assert manifest == json.loads((out / "ccdp-export.json").read_text())
    records = AuditLog.for_store(store).records()
    assert len(records) == before + 1
    entry = records[-1]
    assert entry["event"] == "export" and entry["format"] == "phenopackets"
    assert entry["out"] == str(out.resolve()) and entry["patients"] == manifest["patients"] == 120
    assert entry["records"] == manifest["records"]
    exported = (out / "phenopackets-00000.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in exported]
    assert not any(pid in json.dumps(entry) for pid in ids)  # counts only, never a record
    AuditLog.for_store(store).verify()  # still a valid chain
    run_ccdp("node", "audit", "--store", store, "--verify")


def test_an_earlier_export_is_kept_unless_replace_is_given(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "fhir"
    run_ccdp("export", "fhir", "--store", store, "--out", out, "--json")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = run_ccdp("export", "fhir", "--store", store, "--out", out, check=False)
    assert again.returncode != 0
    assert "already holds an export" in again.stderr and "--replace" in again.stderr
    assert "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    logged = [r for r in AuditLog.for_store(store).records() if r.get("out") == str(out.resolve())]
    assert len(logged) == 1  # a refused export is not logged as one
    run_ccdp("export", "fhir", "--store", store, "--out", out, "--replace", "--json")
    assert sorted(p.name for p in out.iterdir()) == sorted(first)


def test_a_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_ccdp(
        "export",
        "phenopackets",
        "--store",
        tmp_path / "none.duckdb",
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert proc.returncode != 0 and "no node store" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()

"""The plumbing every export shares: a store read a batch of patients at a time (every row once),
and staged output that never leaves half an export nor overwrites one by accident."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccdp.exchange.output import (
    MANIFEST,
    ExportExistsError,
    ExportSummary,
    manifest_beside,
    staged,
    write_manifest,
)
from ccdp.exchange.source import PATIENT_TABLES, TUMOUR_TABLES, patient_batches
from ccdp.store import NodeStore
from tests.storekit import build_store, random_registry

TABLES = (*PATIENT_TABLES, *TUMOUR_TABLES)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = random_registry(3, 257, "FR", "fr")
    tumours = rows["tumour"]
    # a second tumour for some patients, with rows below it, so tumour tables are not 1:1
    extra = [dict(t, tumour_id=t["tumour_id"] + "b") for t in tumours[::5]]
    rows["tumour"] = [*tumours, *extra]
    rows["specimen"] = [
        {"specimen_id": f"S{i}", "tumour_id": t["tumour_id"], "type": "bone_marrow"}
        for i, t in enumerate(rows["tumour"][::3])
    ]
    rows["treatment"] = [
        {"treatment_id": f"R{i}", "tumour_id": t["tumour_id"], "type": "chemotherapy"}
        for i, t in enumerate(extra)
    ]
    path = build_store(tmp_path_factory.mktemp("x") / "s.duckdb", rows)
    with NodeStore(path) as ns:  # the system tables a real (ingested) store has
        ns.create()
    return path


def test_batches_hold_every_row_once_with_its_own_patient(store: Path) -> None:
    with NodeStore(store, read_only=True) as ns:
        stored = {t: ns.read(t) for t in TABLES}
        seen: dict[str, list[tuple[str, ...]]] = {t: [] for t in TABLES}
        sizes = []
        for batch in patient_batches(ns, size=50):
            mine = set(batch.patient["patient_id"])
            sizes.append(len(mine))
            tumours = set(batch.tumour["tumour_id"])
            assert set(batch.tumour["patient_id"]) <= mine
            assert set(batch.trial_enrolment["patient_id"]) <= mine
            for t in ("event", "treatment", "biomarker", "specimen"):
                assert set(batch.table(t)["tumour_id"]) <= tumours, t
            for t in TABLES:
                seen[t] += [tuple(map(str, r)) for r in batch.table(t).itertuples(index=False)]
    assert sizes == [50, 50, 50, 50, 50, 7]
    for t in TABLES:
        want = sorted(tuple(map(str, r)) for r in stored[t].itertuples(index=False))
        assert sorted(seen[t]) == want, t
        assert len(set(seen[t])) == len(seen[t]), t
    assert len(seen["specimen"]) > 0 and len(seen["treatment"]) > 0


def test_batches_are_the_same_each_time(store: Path) -> None:
    with NodeStore(store, read_only=True) as ns:
        one = [b.tumour.to_dict("records") for b in patient_batches(ns, size=64)]
        two = [b.tumour.to_dict("records") for b in patient_batches(ns, size=64)]
    assert one == two


def _export(stage: Path, text: str) -> None:
    (stage / "part-0.ndjson").write_text(text, encoding="utf-8")
    write_manifest(stage, ExportSummary(format="t", standard="test"))


def test_a_new_folder_gets_the_export_and_its_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged(out, replace=False) as stage:
        _export(stage, "one\n")
    assert (out / "part-0.ndjson").read_text() == "one\n"
    assert json.loads((out / MANIFEST).read_text())["format"] == "t"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_an_error_leaves_the_earlier_export_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged(out, replace=False) as stage:
        _export(stage, "first\n")
    with pytest.raises(RuntimeError), staged(out, replace=True) as stage:
        _export(stage, "second, half written")
        raise RuntimeError("disk full")
    assert (out / "part-0.ndjson").read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_is_replaced_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged(out, replace=False) as stage:
        _export(stage, "first\n")
    with pytest.raises(ExportExistsError, match="--replace"), staged(out, replace=False):
        pytest.fail("the block must not run")
    with staged(out, replace=True) as stage:
        (stage / "other.ndjson").write_text("second\n")
        write_manifest(stage, ExportSummary(format="t", standard="test"))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "other.ndjson"]


def test_a_folder_that_is_not_an_export_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    for replace in (False, True):
        with pytest.raises(ExportExistsError, match="not a ccdp export"), staged(out, replace):
            pytest.fail("the block must not run")
    assert (out / "thesis.docx").read_text() == "years of work"


def test_a_single_file_export_keeps_its_manifest_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "cdm.duckdb"
    for text in ("first", "second"):
        with staged(out, replace=True, is_file=True) as stage:
            stage.write_text(text)
            write_manifest(stage, ExportSummary(format="omop", standard="test"), is_file=True)
    assert out.read_text() == "second"
    assert json.loads(manifest_beside(out).read_text())["format"] == "omop"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdm.duckdb", manifest_beside(out).name]
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    with pytest.raises(ExportExistsError), staged(other, replace=True, is_file=True):
        pytest.fail("the block must not run")
    assert other.read_text() == "keep"

"""Pooled results with `dedup` count each child once: on synthetic registries whose node stores
carry link groups taken from the generator's truth (its cross-border duplicate pairs stand in for
the linkage), pooled counts, incidence and Kaplan-Meier with `dedup` on equal the truth's
de-duplicated numbers (read from the generator's CSV files, and lifelines on the de-duplicated
pooled rows); with `dedup` off they equal what a store without link groups answers."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from ccdp.cohort.view import cohort_sql
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import StudyResult, load_study, run_study
from ccdp.governance.registered import study_hash
from ccdp.ingest.pseudonym import pseudonym
from ccdp.store.config import pseudonym_key
from tests.analyses.federate import grouped
from tests.analyses.test_km import check_against_lifelines
from tests.conftest import run_ccdp
from tests.storekit import exact_policy

COUNTRIES = ("FR", "DE", "PL")  # PL -> DE and DE -> FR: both kinds of route, a few copies each


def synth_registries(out: Path, patients: int, seed: int, **policy: Any) -> dict[str, Path]:
    """`ccdp synth --with-identifiers` registries ingested into one store each (the CLI)."""
    run_ccdp(
        "synth", out, "--countries", ",".join(COUNTRIES), "--seed", seed,
        "--patients", patients, "--with-identifiers",
    )  # fmt: skip
    stores = {}
    for c in COUNTRIES:
        store = out / f"{c.lower()}.duckdb"
        run_ccdp("ingest", out / c, "--store", store)
        stores[c] = exact_policy(store, **policy)
    return stores


def link_from_truth(out: Path, stores: dict[str, Path]) -> dict[str, set[str]]:
    """Fill each store's `link_group` from truth.json's cross-border pairs, as a linkage run
    would: one group per pair, `keep` false for the copy registered where the child was treated
    abroad (truth's `cross_border_copy_ids`), true for the origin's record. Returns the store
    patient ids (pseudonyms) of the copies, by country."""
    truth = json.loads((out / "truth.json").read_text())
    copies = set(truth["cross_border_copy_ids"])
    set_aside: dict[str, set[str]] = {c: set() for c in stores}
    rows: dict[str, list[tuple[str, str, bool]]] = {c: [] for c in stores}
    for i, pair in enumerate(truth["cross_border_duplicates"]):
        for pid, country in zip(pair["patient_ids"], pair["countries"], strict=True):
            psn = pseudonym(pseudonym_key(stores[country]), pid)
            rows[country].append((psn, f"g{i:04d}", pid not in copies))
            if pid in copies:
                set_aside[country].add(psn)
    for country, recs in rows.items():
        con = duckdb.connect(str(stores[country]))
        try:
            for psn, group, keep in recs:
                con.execute(
                    "INSERT INTO link_group (patient_id, run_id, group_id, keep, group_size) "
                    "VALUES (?, 'truth', ?, ?, 2)",
                    [psn, group, keep],
                )
        finally:
            con.close()
    return set_aside


def copy_stores(stores: dict[str, Path], to: Path) -> dict[str, Path]:
    """The stores with their node files (key, policy), as they were before any linkage."""
    to.mkdir()
    for store in stores.values():
        for f in store.parent.glob(f"{store.stem}.*"):
            if not f.name.endswith(".ledger.db"):
                shutil.copy(f, to / f.name)
    return {c: to / s.name for c, s in stores.items()}


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup")
    # exactness is checked here, not differencing (tests/federation/test_dedup_attack.py)
    stores = synth_registries(out / "synth", 3000, 3, differencing_threshold=0)
    plain = copy_stores(stores, out / "plain")
    copies = link_from_truth(out / "synth", stores)
    assert sum(map(len, copies.values())) >= 5, "the draw must hold cross-border copies"
    return out / "synth", stores, plain, copies


def raw_tables(out: Path, drop_copies: bool) -> pd.DataFrame:
    """Every tumour of the generator's CSV files with its patient (one row per tumour), the
    truth's cross-border copies left out when `drop_copies`: the reference, read without the
    store, the view or the linkage."""
    truth = json.loads((out / "truth.json").read_text())
    frames = []
    for c in COUNTRIES:
        p = pd.read_csv(out / c / "patient.csv", dtype=str)
        t = pd.read_csv(out / c / "tumour.csv", dtype=str)
        frames.append(t.merge(p, on="patient_id", suffixes=("", "_p")).assign(node=c))
    rows = pd.concat(frames, ignore_index=True)
    if drop_copies:
        rows = rows[~rows.patient_id.isin(truth["cross_border_copy_ids"])]
    return rows


def run(spec: dict[str, Any], stores: dict[str, Path], register: bool = False) -> StudyResult:
    """The study over the stores; `register`: as a registered study (`ccdp run --project`),
    which `dedup: false` needs under the exact test policy (`exact_release: any`)."""
    study = load_study(spec)
    hashes = {study_hash(study.analysis, study.params, study.cohort_json())} if register else ()
    result = run_study(study, InProcessTransport(list(stores.values()), registered=hashes))
    assert all(s.status == "answered" for s in result.nodes.values()), result.nodes
    return result


def cells(result: StudyResult, by: list[str]) -> dict[tuple[Any, ...], int]:
    return {tuple(c[b] for b in by): c["n"] for c in result.result.cells}


@pytest.mark.parametrize("unit", ["tumours", "patients"])
def test_count_with_dedup_equals_the_truth(registries, unit: str) -> None:
    out, stores, plain, _ = registries
    by = ["country", "sex"]
    for dedup in (True, False):
        truth = raw_tables(out, drop_copies=dedup)
        if unit == "patients":
            truth = truth.drop_duplicates(["node", "patient_id"])
        expect = truth.groupby(by).size().to_dict()
        spec = {"analysis": "count", "by": by, "unit": unit, "dedup": dedup}
        got = cells(run(spec, stores, register=not dedup), by)
        assert got == expect
    # a store without link groups answers exactly as before, with dedup on (the default)
    before = run({"analysis": "count", "by": by, "unit": unit}, plain)
    off = run({"analysis": "count", "by": by, "unit": unit, "dedup": False}, stores, True)
    assert before.result == off.result
    assert before.set_aside() == {} and before.to_json()["dedup"] == {"on": True, "set_aside": {}}


def test_set_aside_counts_as_released(registries) -> None:
    """Each node says how many linked duplicates it set aside: the truth's copies there,
    released as a count cell (withheld below min_cell); a store holding no copy says 0."""
    _, stores, _, copies = registries
    result = run({"analysis": "count", "by": ["sex"], "unit": "patients"}, stores)
    shown = result.set_aside()
    assert set(shown) == {s.stem for s in stores.values()}
    for country, store in stores.items():
        note, n = shown[store.stem], len(copies[country])
        if 0 < n < 5:  # the default min_cell
            assert (note.n, note.released) == (None, "withheld")
        else:
            assert (note.n, note.released) == (n, "exact")
    assert result.to_json()["dedup"]["on"] is True
    assert json.loads(json.dumps(result.to_json()))["dedup"]["set_aside"]["pl"]["n"] == 0
    off = run({"analysis": "count", "by": ["sex"], "dedup": False}, stores, register=True)
    assert off.set_aside() == {} and off.to_json()["dedup"]["on"] is False


def age_years(birth: str, diagnosis: str) -> int:
    """Age in whole years; a birth date of month precision is on the 15th (the data model)."""
    b, d = (
        date.fromisoformat(birth if len(birth) == 10 else f"{birth}-15"),
        date.fromisoformat(diagnosis),
    )
    return d.year - b.year - ((d.month, d.day) < (b.month, b.day))


def test_incidence_with_dedup_counts_each_child_once(registries) -> None:
    out, stores, plain, _ = registries
    pop_years = pd.read_csv(out / "FR" / "population.csv").year
    for dedup in (True, False):
        rows = raw_tables(out, drop_copies=dedup)
        pairs = zip(rows.birth_date, rows.diagnosis_date, strict=True)
        ages = pd.Series([age_years(b, d) for b, d in pairs], index=rows.index)
        year = rows.diagnosis_date.str[:4].astype(int)
        cases = rows[(ages < 15) & year.between(pop_years.min(), pop_years.max())]
        expect = cases.groupby("country").size().to_dict()
        spec = {"analysis": "incidence", "by": ["country"], "dedup": dedup}
        result = run(spec, stores, register=not dedup)
        assert {r["country"]: r["cases"] for r in result.result.rows} == expect
    before = run({"analysis": "incidence", "by": ["country"]}, plain)
    off = run({"analysis": "incidence", "by": ["country"], "dedup": False}, stores, True)
    assert before.result == off.result


def view_frames(stores: dict[str, Path], drop: dict[str, set[str]]) -> list[pd.DataFrame]:
    """Each store's whole analysis view (the view's own SQL, no linkage), `drop`'s patients
    left out in pandas."""
    frames = []
    for country, store in stores.items():
        con = duckdb.connect()
        con.execute(f"ATTACH '{store}' AS store (READ_ONLY)")
        frame = con.execute(cohort_sql(None, "TRUE"), [store.stem]).df()
        con.close()
        frames.append(
            frame[~frame.patient_id.isin(drop.get(country, set()))].reset_index(drop=True)
        )
    return frames


def test_km_with_dedup_equals_lifelines_on_the_deduplicated_rows(registries) -> None:
    _, stores, plain, copies = registries
    km = run({"analysis": "km", "outcome": "os", "by": ["sex"]}, stores).result
    check_against_lifelines(km, grouped(view_frames(stores, copies), ["sex"]), "sex")
    # registered (as `dedup: false` must be here): event times exact, lifelines on raw rows
    spec = {"analysis": "km", "outcome": "os", "by": ["sex"]}
    off = run({**spec, "dedup": False}, stores, register=True).result
    rows = pd.concat(view_frames(stores, {}), ignore_index=True).dropna(subset=["os_time"])
    check_against_lifelines(off, rows, "sex")
    assert run(spec, plain, register=True).result == off
    exact_on = run(spec, stores, register=True).result
    deduplicated = pd.concat(view_frames(stores, copies), ignore_index=True)
    check_against_lifelines(exact_on, deduplicated.dropna(subset=["os_time"]), "sex")
    assert sum(g.n for g in km.groups) == sum(g.n for g in off.groups) - sum(
        map(len, copies.values())
    )


def test_the_result_says_what_was_set_aside_everywhere(registries, tmp_path) -> None:
    """JSON, the CLI's print, the Python API and the HTML report all say `dedup` and each
    node's set-aside count as released (a withheld one says so)."""
    import ccdp.api as api
    from ccdp.federation.client import study_result
    from ccdp.report.html import StudyEntry, render_report

    _, stores, _, copies = registries
    spec = {"title": "children by sex", "analysis": "count", "by": ["sex"], "unit": "patients"}
    withheld = "withheld (a small count, or too close to an earlier release)"
    expect = {
        s.stem: withheld if 0 < len(copies[c]) < 5 else str(len(copies[c]))
        for c, s in stores.items()
    }
    line = "dedup: on; linked duplicates set aside, counted at another node: " + "; ".join(
        f"{node}: {text}" for node, text in expect.items()
    )
    res = api.run(spec, stores=list(stores.values()))
    assert line in " ".join(str(res).split())
    assert "; linked duplicates set aside: " in repr(res)
    assert {n: c.text() for n, c in res.set_aside().items()} == expect
    # the CLI, text and JSON, as a user runs it
    path = tmp_path / "study.json"
    path.write_text(json.dumps(spec))
    args = [a for s in stores.values() for a in ("--store", str(s))]
    printed = run_ccdp("run", path, *args).stdout
    assert line in " ".join(printed.split())
    as_json = json.loads(run_ccdp("run", path, *args, "--json").stdout)
    assert as_json["dedup"] == res.to_json()["dedup"]
    # the hub keeps `to_json()`; the client rebuilds it, the report renders it
    assert study_result(as_json).dedup is True
    entry = StudyEntry("s1", "why", spec, {"result": as_json}, 1.0)
    html = render_report([entry], tmp_path / "r.html", "t", "s", []).read_text()
    assert line in " ".join(html.split())


def test_a_registered_study_keeps_its_hash_and_dedup_off_is_another_study() -> None:
    """Studies registered before `dedup` existed keep their canonical form (no `dedup` key when
    on, the default), so nodes still know them; `dedup: false` is a different study."""
    from ccdp.governance.registered import canonical_study

    params = {"outcome": "os", "by": ["sex"]}
    assert "dedup" not in canonical_study("km", params, None)["params"]
    on = study_hash("km", {**params, "dedup": True}, None)
    assert on == study_hash("km", params, None)
    assert canonical_study("km", {**params, "dedup": False}, None)["params"]["dedup"] is False
    assert study_hash("km", {**params, "dedup": False}, None) != on


def test_a_specimen_count_is_not_deduplicated(registries) -> None:
    """Samples are real wherever their child is counted: `dedup` leaves none out, says
    nothing, and `dedup: false` changes nothing."""
    _, stores, plain, _ = registries
    spec = {"analysis": "count", "by": ["country"], "unit": "specimens"}
    on = run(spec, stores)
    assert on.dedup is None and on.set_aside() == {}
    assert on.result == run(spec, plain).result == run({**spec, "dedup": False}, stores).result

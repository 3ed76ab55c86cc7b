"""vrt_report: the very-rare-tumour registry on real stores, against the truth file, direct SQL
counts and scipy; and attacks on one child with a VRT through the report."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from scipy import stats

from ccdp.analyses.vrt import VrtResult
from ccdp.cohort.derived.vrt import classify, entity_ids
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from tests.storekit import build_store, random_registry


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    from tests.storekit import synth_stores

    out = tmp_path_factory.mktemp("vrt_synth")
    return out, synth_stores(out, seed=3, patients=30000)


def report(stores: list[Path], **spec: object) -> VrtResult | None:
    """The report, or None when every node refused (nothing released at all)."""
    res = run_study({"analysis": "vrt_report", **spec}, InProcessTransport(stores))
    assert all(s.status in ("answered", "refused") for s in res.nodes.values()), res.nodes
    if all(s.status == "refused" for s in res.nodes.values()):
        return None
    assert isinstance(res.result, VrtResult)
    return res.result


def test_rules_first_match_and_sources() -> None:
    """The documented rules on codes a registry sends (first matching rule wins)."""
    assert classify("8370", "C74.0", 3) == "adrenocortical_carcinoma"
    assert classify("8370", "C74.0", 1) is None  # adenoma-like behaviour: not a VRT
    assert classify("8260", "C73.9", 3) == "thyroid_carcinoma"
    assert classify("8023", "C73.9", 3) == "nut_carcinoma"  # NUT before the thyroid range
    assert classify("8140", "C19.9", 3) == "colorectal_carcinoma"
    assert classify("8140", "C16.9", 3) is None
    assert classify("8720", "C69.4", 3) == "melanoma"
    assert classify("9500", "C74.9", 3) is None
    doc = Path(__file__).resolve().parents[2] / "src/ccdp/cohort/derived/data/vrt_entities.md"
    text = doc.read_text()
    assert all(f"`{e}`" in text for e in entity_ids())


def test_rates_cover_the_truth_and_node_cases_equal_sql(synth) -> None:
    out, stores = synth
    truth = json.loads((out / "truth.json").read_text())["vrt"]["rates"]
    result = report(stores)
    assert result is not None
    checked = 0
    for e in result.entities:
        for r in e.rates:
            expect = truth[e.entity][r.ages]
            if r.cases is None or expect["expected_cases"] < 30:
                continue
            # exact Poisson interval, recomputed from scipy's chi-square
            lo = stats.chi2.ppf(0.025, 2 * r.cases) / 2 / r.person_years * 1e6
            hi = stats.chi2.ppf(0.975, 2 * r.cases + 2) / 2 / r.person_years * 1e6
            assert r.ci_low == pytest.approx(lo, rel=1e-9)
            assert r.ci_high == pytest.approx(hi, rel=1e-9)
            assert r.ci_low <= expect["rate_per_million"] <= r.ci_high, (e.entity, r.ages)
            assert r.below_2_per_million == (r.rate < 2)
            checked += 1
    assert checked >= 6
    # node cases (0-19) against a direct count of the store's coded tumours
    melanoma = next(e for e in result.entities if e.entity == "melanoma")
    for store in stores:
        con = duckdb.connect(str(store), read_only=True)
        n = con.execute(
            """SELECT count(*) FROM tumour t JOIN patient p USING (patient_id)
               WHERE t.behaviour = 3 AND t.morphology BETWEEN '8720' AND '8790'
               AND date_diff('year', p.birth_date, t.diagnosis_date)
                   - (strftime(t.diagnosis_date, '%m%d') < strftime(p.birth_date, '%m%d'))::INT
                   < 20"""
        ).fetchone()
        con.close()
        assert n is not None
        assert melanoma.node_cases[store.stem] == n[0]
    # OS where enough cases allow: a KM estimate between 0 and 1 at 5 years
    assert melanoma.os is not None and melanoma.os_5y is not None
    assert 0 < melanoma.os_5y <= 1
    assert "Melanoma" in str(result)
    frame = result.to_frame()
    cases = [c for c in frame.columns if c.startswith("cases ")]
    assert cases and all(str(frame[c].dtype) == "Int64" for c in cases)  # 3, not 3.0


def _registry_with_acc(n_male: int, n_female: int) -> dict:
    """A random registry where a few children have an adrenocortical carcinoma (ages 5)."""
    rows = random_registry(7, 400, "FR", "fr")
    patients = {p["patient_id"]: p for p in rows["patient"]}
    sexes = ["male"] * n_male + ["female"] * n_female
    for tumour, sex in zip(rows["tumour"], sexes, strict=False):
        tumour |= {"morphology": "8370", "topography": "C74.0", "iccc_group": "XI"}
        patient = patients[tumour["patient_id"]]
        patient |= {"sex": sex, "birth_date": tumour["diagnosis_date"] - timedelta(days=5 * 366)}
    for tumour in rows["tumour"][len(sexes) :]:
        patients[tumour["patient_id"]]["birth_date"] = tumour["diagnosis_date"] - timedelta(
            days=3000
        )
    return rows


def _acc(result: VrtResult | None) -> tuple[int | None, int | None]:
    if result is None:  # the node refused: nothing released
        return (None, None)
    e = next(e for e in result.entities if e.entity == "adrenocortical_carcinoma")
    return e.rates[0].cases, e.rates[1].cases


def test_a_single_child_with_a_vrt_is_not_released(tmp_path: Path) -> None:
    store = build_store(tmp_path / "fr.duckdb", _registry_with_acc(0, 1))
    result = report([store], entities=["adrenocortical_carcinoma"])
    assert _acc(result) == (None, None)  # refused (cohort too small) or the cell suppressed
    if result is not None:
        acc = result.entities[0]
        assert acc.node_cases == {"fr": None}
        assert acc.rates[0].withheld_nodes == ["fr"]
        assert acc.os is None


def test_one_child_cannot_be_learned_by_differencing_two_reports(tmp_path: Path) -> None:
    """Eleven boys and one girl with ACC: the report of all, then of boys only; the second must
    not release 11 after the first released 12 (their difference would be the girl)."""
    store = build_store(tmp_path / "fr.duckdb", _registry_with_acc(11, 1))
    first = report([store], entities=["adrenocortical_carcinoma"])
    assert _acc(first) == (12, 12)
    second = report([store], entities=["adrenocortical_carcinoma"], cohort={"sex": "male"})
    released = [c for c in _acc(second) if c is not None]
    assert all(not 0 < 12 - c < 5 for c in released)
    # and the other order: a node that released the boys does not then release all twelve
    other = build_store(tmp_path / "de.duckdb", _registry_with_acc(11, 1))
    boys = report([other], entities=["adrenocortical_carcinoma"], cohort={"sex": "male"})
    assert _acc(boys) == (11, 11)
    everyone = report([other], entities=["adrenocortical_carcinoma"])
    assert all(c is None or not 0 < c - 11 < 5 for c in _acc(everyone))


def test_vrt_entity_in_the_view_matches_the_python_rules(synth) -> None:
    import ccdp.api as api

    _, stores = synth
    view = api.view(stores[0])
    expect = [
        classify(m, t, None if pd.isna(b) else int(b))
        for m, t, b in zip(view.morphology, view.topography, view.behaviour, strict=True)
    ]
    got = view.vrt_entity.where(view.vrt_entity.notna(), None).tolist()
    assert got == expect
    assert view.vrt_entity.notna().sum() > 100

"""Incidence on ingested synthetic registries comes out near the truth file's rates."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study

SEGI = {"0": 2400, "1-4": 9600, "5-9": 10000, "10-14": 9000}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tests.storekit import synth_stores

    out = tmp_path_factory.mktemp("synth")
    return out, synth_stores(out, seed=1, patients=16000)


def truth_asr(out, country: str, group: str | None) -> float:
    """World-standardised rate (0-14) implied by the generator's rates and populations."""
    truth = json.loads((out / "truth.json").read_text())
    rates = pd.DataFrame(truth["incidence"]["rates_per_million"])
    rates = rates[(rates.country == country) & rates.age_group.isin(SEGI)]
    if group is not None:
        rates = rates[rates.iccc_group == group]
    pop = pd.read_csv(out / country / "population.csv", dtype={"age_group": str})
    pop = pop.groupby(["age_group", "sex"]).population.sum().rename("py").reset_index()
    m = rates.merge(pop, on=["age_group", "sex"])
    m["cases"] = m.rate_per_million * m.py
    per_age = m.groupby("age_group").cases.sum() / pop.groupby("age_group").py.sum()
    w = pd.Series(SEGI) / sum(SEGI.values())
    return float((per_age.reindex(w.index) * w).sum())


def test_world_standardised_rates_near_truth(synth):
    out, stores = synth
    res = run_study({"analysis": "incidence", "by": ["country"]}, InProcessTransport(stores))
    assert all(s.status == "answered" for s in res.nodes.values())
    for row in res.result.rows:
        expect = truth_asr(out, row["country"], None)
        assert row["asr"] == pytest.approx(expect, rel=0.06)
        assert row["asr_ci_low"] < row["asr"] < row["asr_ci_high"]
    res = run_study(
        {"analysis": "incidence", "by": ["country"], "cohort": {"iccc_group": "I"}},
        InProcessTransport(stores),
    )
    for row in res.result.rows:
        assert row["asr"] == pytest.approx(truth_asr(out, row["country"], "I"), rel=0.1)


def test_view_relapse_timing_matches_the_generator(synth):
    """The view's I-BFM relapse timing of ALL reproduces the generator's shares."""
    import ccdp.api as api

    out, stores = synth
    truth = json.loads((out / "truth.json").read_text())["relapse"]["all_timing_shares"]
    view = pd.concat([api.view(s, {"iccc_subgroup": "Ia", "relapsed": 1}) for s in stores])
    assert len(view) > 200
    shares = view.relapse_timing.value_counts(normalize=True)
    for timing, share in truth.items():
        assert shares[timing] == pytest.approx(share, abs=0.08)
    assert (view.relapse_os_time >= 0).all() and (view.time_to_relapse >= 0).all()

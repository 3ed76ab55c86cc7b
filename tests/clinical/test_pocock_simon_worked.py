"""Minimisation against a published worked example, and the `variance` imbalance by hand.

Published: Lim & In, Korean J Anesthesiol 2019;72:221-232, Table 4 (tests/data/
lim_in_2019_minimisation.csv names it): 14 patients already allocated to control or treatment by
site, sex and age band; the 15th (site 2, female, 74 years) would leave a total imbalance of 3 on
control and 5 on treatment, so gets control. The test replays 14 patients with exactly those
marginal counts into ccdp's minimisation and asks it the same question, with p = 1 (no random
element; Pocock and Simon's deterministic case) so that the arm is decided by the totals alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from ccdp.clinical.randomisation import (
    Marginals,
    TrialSpec,
    imbalance,
    minimisation_arm,
)

DATA = Path(__file__).parents[1] / "data" / "lim_in_2019_minimisation.csv"
# the paper's factors as analysis-view strata (minimisation reads the level labels as given)
FACTOR = {"site": "country", "sex": "sex", "age": "age_group"}
SEED = hashlib.sha256(b"lim-in-2019").hexdigest()


def published() -> pd.DataFrame:
    return pd.read_csv(DATA, comment="#")


def trial(imbalance_: str = "range", arms: tuple[str, ...] = ("control", "treatment")) -> TrialSpec:
    return TrialSpec.model_validate(
        {
            "name": "lim-in",
            "arms": list(arms),
            "strata": ["country", "sex", "age_group"],
            "method": "minimisation",
            "p": 1.0,
            "imbalance": imbalance_,
        }
    )


def first_fourteen() -> list[tuple[dict[str, str], str]]:
    """Fourteen patients (strata, arm) whose marginal counts are the paper's Table 4: per arm,
    the k-th patient takes the k-th site, sex and age band of that arm's column."""
    table = published()
    out = []
    for arm in ("control", "treatment"):
        columns = {
            f: [lvl for lvl, k in zip(block["level"], block[arm], strict=True) for _ in range(k)]
            for f, block in table.groupby("factor", sort=False)
        }
        sizes = {len(v) for v in columns.values()}
        assert sizes == {7}, sizes  # every factor accounts for the arm's 7 patients
        for k in range(7):
            out.append(({FACTOR[f]: columns[f][k] for f in columns}, arm))
    return out


def state(spec: TrialSpec) -> Marginals:
    marginals = Marginals.empty()
    for strata, arm in first_fourteen():
        marginals.add(strata, spec.arms.index(arm), len(spec.arms))
    return marginals


PATIENT_15 = {"country": "site 2", "sex": "female", "age_group": ">=65"}


def test_the_replayed_state_is_the_papers_table() -> None:
    marginals = state(trial())
    for r in published().itertuples():
        assert marginals.of(FACTOR[r.factor], r.level, 2) == [r.control, r.treatment]


def test_published_totals_and_allocation_of_the_15th_patient() -> None:
    spec = trial()
    marginals = state(spec)
    assert imbalance(spec, PATIENT_15, marginals) == [3.0, 5.0]  # Table 4: 3 and 5
    assert spec.arms[minimisation_arm(spec, SEED, 14, PATIENT_15, marginals)] == "control"


def test_variance_on_the_published_example() -> None:
    """Two arms: a level's population variance of (n_control, n_treatment) is (difference / 2)²,
    so the totals are control (1² + 1² + 1²) / 4 = 0.75 and treatment (3² + 1² + 1²) / 4 = 2.75
    (the differences of Table 4: site 2 4-5 / 3-6, female 4-3 / 3-4, >=65 4-3 / 3-4)."""
    spec = trial("variance")
    marginals = state(spec)
    assert imbalance(spec, PATIENT_15, marginals) == pytest.approx([0.75, 2.75])
    assert spec.arms[minimisation_arm(spec, SEED, 14, PATIENT_15, marginals)] == "control"


def three_arm_state(spec: TrialSpec) -> Marginals:
    """Three arms A, B, C; six earlier patients (sex, country, arm):
    B (female, DE), C (female, FR), A (male, FR) x2, C (male, FR) x2.
    The new patient is female from FR, so the counts at her levels are
    female: A 0, B 1, C 1;  FR: A 2, B 0, C 3."""
    marginals = Marginals.empty()
    earlier = [
        ("female", "DE", "B"),
        ("female", "FR", "C"),
        ("male", "FR", "A"),
        ("male", "FR", "A"),
        ("male", "FR", "C"),
        ("male", "FR", "C"),
    ]
    for sex, country, arm in earlier:
        marginals.add({"sex": sex, "country": country}, spec.arms.index(arm), 3)
    return marginals


def three_arm(imbalance_: str) -> TrialSpec:
    return TrialSpec.model_validate(
        {
            "name": "abc",
            "arms": ["A", "B", "C"],
            "strata": ["sex", "country"],
            "method": "minimisation",
            "p": 1.0,
            "imbalance": imbalance_,
        }
    )


NEW = {"sex": "female", "country": "FR"}


def test_range_and_variance_by_hand_choose_different_arms() -> None:
    """Hand arithmetic (population variance, divisor 3; the divisor does not change the choice):

    give A: female (1,1,1) range 0, var 0;      FR (3,0,3) mean 2, var (1+4+1)/3 = 2, range 3
            totals: range 0 + 3 = 3,  variance 0 + 2 = 2
    give B: female (0,2,1) mean 1, var (1+1+0)/3 = 2/3, range 2;
            FR (2,1,3) mean 2, var (0+1+1)/3 = 2/3, range 2
            totals: range 2 + 2 = 4,  variance 2/3 + 2/3 = 4/3
    give C: female (0,1,2) var 2/3, range 2;    FR (2,0,4) mean 2, var (0+4+4)/3 = 8/3, range 4
            totals: range 2 + 4 = 6,  variance 2/3 + 8/3 = 10/3

    Range prefers A (3 < 4 < 6); variance prefers B (4/3 < 2 < 10/3): variance penalises
    FR's (3,0,3) more than range does."""
    spec_r, spec_v = three_arm("range"), three_arm("variance")
    assert imbalance(spec_r, NEW, three_arm_state(spec_r)) == [3.0, 4.0, 6.0]
    assert imbalance(spec_v, NEW, three_arm_state(spec_v)) == pytest.approx([2.0, 4 / 3, 10 / 3])
    assert minimisation_arm(spec_r, SEED, 6, NEW, three_arm_state(spec_r)) == 0  # A
    assert minimisation_arm(spec_v, SEED, 6, NEW, three_arm_state(spec_v)) == 1  # B


def test_variance_with_a_ratio_divides_counts_by_the_ratio() -> None:
    """Ratio 2:1, one factor, the patient's level has A 2, B 0. Counts / ratio:
    give A: (3/2, 0/1) -> var ((1.5-0.75)² + (0-0.75)²)/2 = 0.5625, range 1.5
    give B: (2/2, 1/1) -> var 0, range 0: B is preferred under both."""
    spec = TrialSpec.model_validate(
        {
            "name": "r21",
            "arms": ["A", "B"],
            "ratio": [2, 1],
            "strata": ["sex"],
            "method": "minimisation",
            "p": 1.0,
            "imbalance": "variance",
        }
    )
    marginals = Marginals.empty()
    for _ in range(2):
        marginals.add({"sex": "male"}, 0, 2)
    assert imbalance(spec, {"sex": "male"}, marginals) == pytest.approx([0.5625, 0.0])
    assert minimisation_arm(spec, SEED, 2, {"sex": "male"}, marginals) == 1

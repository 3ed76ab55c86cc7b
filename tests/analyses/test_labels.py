"""Words, not machine names, on everything a person reads (issue 23, items 7 and 8): the CLI
text of a result and its plot's axes and legends, from the one label lookup; JSON keeps the
machine names. And one rule per number: plain ratio ticks, bands in numeric order, ratios to 2
decimals, survival in % to 1, medians in years, 'not reached' and 'not estimable'."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from rich.console import Console

from ccdp.analyses.cox import CoxResult, CoxTerm
from ccdp.analyses.incidence import IncidenceResult
from ccdp.analyses.tables import ratio_ci, survival_ci, years, years_ci
from ccdp.cohort.labels import group_label, model_term_label, value_label, variable_label
from ccdp.cohort.view import declared_levels, view_variables
from tests.analyses.federate import federate, split

# machine names that must never reach a screen, a report or a plot
FORBIDDEN = [
    "RELAPSE_EFS",
    "relapse_efs",
    "very_early",
    "segi_world",
    "b_precursor",
    "arm[",
    "age_group[",
    "ci_low",
    "ci_high",
    "iccc_group",
    "relapse_timing",
    "immunophenotype",
    "NR–NR",
    "1.000 (1.000–1.000)",
]
NR = re.compile(r"\bNR\b")
YEAR = 365.25


def rich_text(renderable: object) -> str:
    """What the CLI prints for a result (rich, no colour)."""
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(renderable)
    return buf.getvalue()


def assert_worded(text: str) -> None:
    found = [t for t in FORBIDDEN if t in text]
    assert not found, f"internal names on screen: {found}"
    assert not NR.search(text), "'NR' instead of 'not reached'"


def figure_texts(fig: Figure) -> str:
    """Every text a reader sees on a figure: axis labels, tick labels, legends, annotations."""
    fig.canvas.draw()
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        out += [t.get_text() for t in ax.texts]
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return "\n".join(out)


def survival_frame(rng: np.random.Generator, n: int, **groups: list[str]) -> pd.DataFrame:
    cols = {k: rng.choice(v, size=n) for k, v in groups.items()}
    time = rng.integers(20, 365 * 7, size=n)
    event = rng.integers(0, 2, size=n)
    return pd.DataFrame(
        {
            "os_time": time,
            "os_event": event,
            "relapse_efs_time": time,
            "relapse_efs_event": event,
            **cols,
        }
    )


def test_km_by_iccc_group_reads_as_words_in_the_cli_and_the_plot() -> None:
    rng = np.random.default_rng(1)
    frame = survival_frame(rng, 300, iccc_group=["I", "II", "III"])
    result = federate("km", {"by": ["iccc_group"]}, split(frame, 2, rng), min_cell=1)
    text = rich_text(result)
    assert_worded(text)
    assert "Leukaemias (I)" in text and "CNS neoplasms (III)" in text
    assert "ICCC-3 main group" in text and "Overall survival" in text
    fig = result.plot()
    shown = figure_texts(fig)
    assert_worded(shown)
    ax, risk_ax = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [x.split(" (n=")[0] for x in legend] == [
        "Leukaemias (I)",
        "Lymphomas (II)",
        "CNS neoplasms (III)",
    ]
    assert risk_ax.get_yticklabels()[0].get_text() == "Leukaemias (I)"
    assert ax.get_ylabel() == "Overall survival (probability)"
    # JSON keeps the machine names: labels are for people
    assert '"group":"I"' in result.model_dump_json()


def test_relapse_efs_by_timing_reads_as_words() -> None:
    rng = np.random.default_rng(2)
    frame = survival_frame(rng, 240, relapse_timing=["early", "late", "very_early"])
    result = federate(
        "km", {"outcome": "relapse_efs", "by": ["relapse_timing"]}, split(frame, 2, rng), min_cell=1
    )
    text = rich_text(result)
    assert_worded(text)
    assert "EFS after relapse" in text and "Very early relapse" in text
    assert "Relapse timing (I-BFM)" in text
    fig = result.plot()
    assert_worded(figure_texts(fig))
    assert fig.axes[0].get_ylabel() == "EFS after relapse (probability)"
    assert '"outcome":"relapse_efs"' in result.model_dump_json()


def test_immunophenotype_takes_the_data_models_words() -> None:
    rng = np.random.default_rng(3)
    frame = survival_frame(rng, 200, immunophenotype=["b_precursor", "t"])
    result = federate("km", {"by": ["immunophenotype"]}, [frame], min_cell=1)
    text = rich_text(result) + figure_texts(result.plot())
    assert_worded(text)
    assert "B-cell precursor" in text and "T-cell" in text


def incidence(standard: str = "segi_world") -> IncidenceResult:
    def row(age: str, asr: float) -> dict:
        return {
            "age_group": age,
            "cases": 50,
            "person_years": 1e6,
            "crude_rate": asr,
            "crude_ci_low": asr * 0.8,
            "crude_ci_high": asr * 1.25,
            "asr": asr,
            "asr_ci_low": asr * 0.8,
            "asr_ci_high": asr * 1.25,
            "suppressed": False,
        }

    return IncidenceResult(
        analysis="incidence",
        by=["age_group"],
        ages="0-14",
        standard=standard,
        ci="fay_feuer",
        level=0.95,
        rows=[row("1-4", 150.0), row("5-9", 120.0), row("10-14", 110.0)],
    )


def test_incidence_names_its_standard_in_words() -> None:
    result = incidence()
    text = rich_text(result)
    assert_worded(text)
    assert "Segi world standard" in text and "Age group (years)" in text
    fig = result.plot()
    assert_worded(figure_texts(fig))
    (ax,) = fig.axes
    assert "Segi world standard" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-4", "5-9", "10-14"]


def arm_frame(rng: np.random.Generator, n: int = 400) -> pd.DataFrame:
    arm = rng.choice(["A-standard", "B-reduced-anthracycline"], size=n)
    age = rng.choice(["15-19", "10-14", "1-4", "5-9", "0"], size=n)
    hazard = np.where(arm == "A-standard", 1.0, 0.8) * (1 + 0.1 * (age == "15-19"))
    t = np.ceil(rng.exponential(1500 / hazard))
    c = rng.uniform(200, 3000, n)
    return pd.DataFrame(
        {
            "os_time": np.minimum(t, c),
            "os_event": (t <= c).astype(int),
            "arm": arm,
            "age_group": age,
        }
    )


def test_cox_with_an_arm_reads_as_words_with_bands_in_order_and_plain_ticks() -> None:
    rng = np.random.default_rng(4)
    result = federate(
        "cox",
        {"covariates": ["arm", "age_group"], "strata": "none"},
        split(arm_frame(rng), 2, rng),
    )
    text = rich_text(result)
    assert_worded(text)
    assert "Arm: B-reduced-anthracycline" in text
    assert "reference levels: Arm = A-standard, Age group (years) = 0" in text
    # hazard ratios and their CIs to 2 decimals
    hr = next(c for c in result.coefficients if c.term.startswith("arm"))
    assert f"{hr.hr:.2f} ({hr.ci_low:.2f}–{hr.ci_high:.2f})" in text
    # age bands by their lower bound, in the text and on the plot
    rows = [line for line in text.splitlines() if "Age group (years):" in line]
    assert [re.search(r": (\d+-\d+)", r).group(1) for r in rows] == ["1-4", "5-9", "10-14", "15-19"]
    fig = result.plot()
    assert_worded(figure_texts(fig))
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        "Arm: B-reduced-anthracycline",
        "Age group (years): 1-4",
        "Age group (years): 5-9",
        "Age group (years): 10-14",
        "Age group (years): 15-19",
    ]  # top to bottom: the arm, then the bands from 1-4 down
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "1" in ticks and all(re.fullmatch(r"\d+(\.\d+)?", t) for t in ticks), ticks
    assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]


def test_ratio_ticks_are_powers_of_two_around_one() -> None:
    from ccdp.analyses.plots import ratio_ticks

    assert ratio_ticks(0.3, 3.0) == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert ratio_ticks(0.8, 1.2) == [0.5, 1.0, 2.0]
    assert len(ratio_ticks(0.001, 1000.0)) <= 11


def cox(terms: list[CoxTerm]) -> CoxResult:
    return CoxResult(
        outcome="os",
        ties="efron",
        strata="none",
        coefficients=terms,
        loglik=-10.0,
        loglik_null=-11.0,
        lr_chi2=2.0,
        lr_df=1,
        lr_p=0.15,
        n=40,
        events=10,
        iterations=4,
        converged=True,
    )


def test_a_degenerate_hazard_ratio_says_not_estimable() -> None:
    flat = CoxTerm(term="arm[B]", coef=0.0, se=0.0, hr=1.0, ci_low=1.0, ci_high=1.0, p=1.0)
    text = rich_text(cox([flat]))
    assert "not estimable" in text and "1.000 (1.000–1.000)" not in text
    assert "1.00 (1.00–1.00)" not in text


def test_number_rules() -> None:
    assert ratio_ci(0.8512, 0.6234, 1.1678) == "0.85 (0.62–1.17)"
    assert ratio_ci(1.0, 1.0, 1.0) == "not estimable"
    assert ratio_ci(float("nan"), 0.1, 2.0) == "not estimable"
    assert survival_ci(0.81234, 0.76, 0.8551) == "81.2% (76.0–85.5)"
    assert survival_ci(1.0, 1.0, 1.0) == "100.0% (CI not estimable)"
    assert survival_ci(None, None, None) == "not estimable"
    assert years(730.5, YEAR) == "2.00" and years(None, YEAR) == "not reached"
    assert years_ci(365.25, None, YEAR) == "1.00–not reached"
    assert years_ci(None, None, YEAR) == "not estimable"
    assert years_ci(400.0, 400.0, YEAR) == "not estimable"


def test_a_median_not_reached_says_so_in_years() -> None:
    rng = np.random.default_rng(6)
    n = 60
    frame = pd.DataFrame(
        {
            "os_time": rng.integers(400, 3000, size=n),
            "os_event": np.r_[np.ones(5, int), np.zeros(n - 5, int)],
            "sex": rng.choice(["male", "female"], size=n),
        }
    )
    result = federate("km", {"by": ["sex"]}, [frame], min_cell=1)
    text = rich_text(result)
    assert_worded(text)
    assert "not reached" in text and "not estimable" in text
    assert "median (years)" in text and "days" not in text.split("\n")[0]


# -- the label table itself -----------------------------------------------------------------
def test_every_public_view_variable_has_words() -> None:
    missing = [n for n, v in view_variables().items() if not v.identifier and not v.label]
    assert not missing


def test_every_iccc_main_group_has_words() -> None:
    groups = [g for g in sorted(declared_levels("iccc_group") or ()) if g != "999"]
    assert len(groups) == 12
    for g in groups:
        assert value_label("iccc_group", g).endswith(f"({g})")


@pytest.mark.parametrize(
    ("term", "words"),
    [
        ("arm[B-reduced-anthracycline]", "Arm: B-reduced-anthracycline"),
        ("immunophenotype[b_precursor]", "Immunophenotype: B-cell precursor"),
        ("relapse_timing[very_early]", "Relapse timing (I-BFM): Very early relapse"),
        ("age_at_diagnosis", "Age at diagnosis (years)"),
        ("not_a_variable", "not_a_variable"),
    ],
)
def test_model_terms_in_words(term: str, words: str) -> None:
    assert model_term_label(term) == words


def test_group_labels_word_each_part() -> None:
    assert group_label("I, male", ["iccc_group", "sex"]) == "Leukaemias (I), male"
    assert group_label("all", []) == "all"
    assert variable_label("ci_low") == "95% CI lower"


def test_count_tables_in_the_cli_read_as_words() -> None:
    rng = np.random.default_rng(7)
    frame = survival_frame(rng, 300, iccc_group=["I", "II"], age_group=["10-14", "1-4", "5-9"])
    text = rich_text(federate("crosstab", {"by": ["iccc_group", "age_group"]}, [frame]))
    assert_worded(text)
    assert "Leukaemias (I)" in text and "Lymphomas (II)" in text
    assert text.index("1-4") < text.index("5-9") < text.index("10-14")

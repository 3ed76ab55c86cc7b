"""KM and forest plots draw what the result holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from ccdp.analyses.axes import at_risk_at
from ccdp.analyses.plots import PALETTE
from tests.analyses.data import freireich
from tests.analyses.federate import federate, split


def test_km_plot_has_curves_bands_and_numbers_at_risk(tmp_path) -> None:
    df = freireich()
    # exact times (min_cell 1), so the numbers at risk can be counted from the data
    result = federate("km", {"by": ["arm"]}, split(df, 3, np.random.default_rng(0)), min_cell=1)
    fig = result.plot(years=False)
    assert isinstance(fig, Figure)
    ax, risk_ax = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["6-MP (n=21)", "placebo (n=21)"]
    assert len(ax.collections) == 2  # one CI band per group
    numbers = [t.get_text() for t in risk_ax.texts]
    per_group = len(risk_ax.get_xticks())
    assert numbers[0] == "21" and numbers[per_group] == "21"
    # at risk at week 10 on 6-MP: remission lengths >= 10 (lifelines event table agrees)
    assert at_risk_at(result.groups[0].table, np.array([10.0])) == [
        int((df[df.Rx == 0].os_time >= 10).sum())
    ]
    fig.savefig(tmp_path / "km.png")
    assert (tmp_path / "km.png").stat().st_size > 10_000


def test_forest_plot_has_one_row_per_term(tmp_path) -> None:
    df = freireich()
    result = federate(
        "cox",
        {"covariates": ["arm", "wbc_at_diagnosis"], "strata": "none"},
        split(df, 2, np.random.default_rng(1)),
    )
    fig = result.plot()
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "Arm: placebo",
        "White cell count at diagnosis (10⁹/L)",
    ]
    assert ax.get_xscale() == "log"
    fig.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 5_000


def relapse_frame(rng: np.random.Generator, n: int = 240) -> pd.DataFrame:
    """Relapsed children: EFS from the first relapse (days), by I-BFM relapse timing; the
    timings arrive in text order (early, late, very_early) to show the plot reorders them."""
    timing = rng.choice(["early", "late", "very_early"], size=n)
    return pd.DataFrame(
        {
            "relapse_efs_time": rng.integers(20, 365 * 7, size=n),
            "relapse_efs_event": rng.integers(0, 2, size=n),
            "relapse_timing": timing,
        }
    )


def test_relapse_efs_plot_reads_from_first_relapse_in_time_order_with_whole_year_ticks() -> None:
    rng = np.random.default_rng(4)
    result = federate(
        "km",
        {"outcome": "relapse_efs", "by": ["relapse_timing"]},
        split(relapse_frame(rng), 2, rng),
        min_cell=1,
    )
    # the declared order of relapse_timing in view_variables.yaml, not the alphabet
    assert [g.group for g in result.groups] == ["very_early", "early", "late"]
    ax, risk_ax = result.plot().axes
    assert risk_ax.get_xlabel() == "years since first relapse"
    legend = [t.get_text().split(" (n=")[0] for t in ax.get_legend().get_texts()]
    assert legend == ["Very early relapse", "Early relapse", "Late relapse"]
    ticks = risk_ax.get_xticks()
    assert len(ticks) >= 3 and np.allclose(ticks, np.round(ticks)) and ticks[0] == 0
    # numbers at risk stand at those whole years
    assert {round(t.get_position()[0], 9) for t in risk_ax.texts} <= set(ticks.tolist())


def test_twelve_groups_get_twelve_distinct_colours() -> None:
    rng = np.random.default_rng(5)
    n = 12 * 30
    frame = pd.DataFrame(
        {
            "os_time": rng.integers(10, 2000, size=n),
            "os_event": rng.integers(0, 2, size=n),
            "iccc_group": np.repeat(
                ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"], 30
            ),
        }
    )
    result = federate("km", {"by": ["iccc_group"]}, [frame], min_cell=1)
    ax, _ = result.plot().axes
    colours = [to_rgb(line.get_color()) for line in ax.get_lines() if line.get_label()[0] != "_"]
    assert len(colours) == 12 and len(set(colours)) == 12
    # and far apart, not twelve shades of one hue: every pair differs by > 0.2 in RGB
    rgb = np.array(colours)
    gaps = np.linalg.norm(rgb[:, None, :] - rgb[None, :, :], axis=-1)[np.triu_indices(12, 1)]
    assert gaps.min() > 0.2
    assert {to_rgb(c) for c in PALETTE} == set(colours)


def test_incidence_plot_has_a_bar_with_its_ci_per_group_and_marks_a_suppressed_one() -> None:
    from ccdp.analyses.incidence import IncidenceResult

    def row(country: str, asr: float | None) -> dict:
        lo, hi = (None, None) if asr is None else (asr * 0.8, asr * 1.25)
        return {
            "country": country,
            "cases": None if asr is None else 50,
            "person_years": 1e6,
            "crude_rate": asr,
            "crude_ci_low": lo,
            "crude_ci_high": hi,
            "asr": asr,
            "asr_ci_low": lo,
            "asr_ci_high": hi,
            "suppressed": asr is None,
        }

    result = IncidenceResult(
        analysis="incidence",
        by=["country"],
        ages="0-14",
        standard="segi_world",
        ci="fay_feuer",
        level=0.95,
        rows=[row("DE", 150.0), row("FR", 160.0), row("KE", None)],
    )
    fig = result.plot()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["DE", "FR", "KE"]
    bars = ax.patches
    assert [round(b.get_height()) for b in bars] == [150, 160]  # no zero bar for KE
    assert [to_rgb(b.get_facecolor()) for b in bars] == [to_rgb(PALETTE[0]), to_rgb(PALETTE[1])]
    assert [t.get_text() for t in ax.texts] == ["suppressed"]
    assert "ASR per million" in ax.get_ylabel()

"""KM and forest plots draw what the result holds."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ccdp.report.plots import at_risk_at
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
    assert numbers[0] == "21" and "21" in numbers[6:]
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
    assert [t.get_text() for t in ax.get_yticklabels()] == ["arm[placebo]", "wbc_at_diagnosis"]
    assert ax.get_xscale() == "log"
    fig.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 5_000

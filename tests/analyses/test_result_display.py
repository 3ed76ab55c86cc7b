"""Every result shows itself as `ccdp run` prints it: `print` gives the CLI's text, `repr` one
short line, `_repr_html_` the same tables as HTML (escaped), `to_frame()` the summary and
`to_frame(steps=True)` the step table of the results that have one."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from ccdp.analyses.base import AnalysisResult, NoStepTable
from ccdp.analyses.km import KMResult
from ccdp.cohort.labels import group_label, model_term_label
from tests.analyses.data import cohort, freireich
from tests.analyses.federate import federate, split

HOSTILE = '<script>alert("x")</script> & [bold]B[/bold]'


def cli_text(result: AnalysisResult, width: int = 100) -> str:
    """What `ccdp run` prints for the result: ccdp.report.console.print_study's result part."""
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(result)
    return buf.getvalue().rstrip("\n")


@pytest.fixture(scope="module")
def results() -> dict[str, AnalysisResult]:
    df = cohort(300, 5)
    frames = split(df, 3, np.random.default_rng(4))
    lymph = freireich()
    return {
        "km": federate("km", {"by": ["sex"]}, frames),
        "logrank": federate("logrank", {"by": ["sex"]}, frames),
        "cox": federate("cox", {"covariates": ["age_at_diagnosis", "sex"]}, frames),
        "logistic": federate(
            "logistic", {"outcome": "os_event", "covariates": ["age_at_diagnosis"]}, frames
        ),
        "count": federate("count", {"by": ["sex"]}, frames),
        "crosstab": federate("crosstab", {"by": ["sex", "risk_group"]}, frames),
        "km_freireich": federate("km", {"by": ["arm"]}, [lymph], min_cell=1),
    }


class Checker(HTMLParser):
    """Collects tags and text; fails on a closing tag that does not match the open one."""

    VOID = frozenset({"br", "hr", "img", "meta", "col"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(markup: str) -> Checker:
    checker = Checker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


@pytest.mark.parametrize("name", ["km", "logrank", "cox", "logistic", "count", "crosstab"])
def test_print_is_the_cli_text_and_repr_is_one_short_line(results, name) -> None:
    result = results[name]
    assert str(result) == cli_text(result)
    assert "\n" in str(result)  # a table, not a repr
    line = repr(result)
    assert line.startswith(f"<{type(result).__name__}: ") and line.endswith(">")
    assert "\n" not in line and len(line) < 100


def test_repr_says_groups_and_subjects(results) -> None:
    km = results["km"]
    subjects = sum(g.n for g in km.groups)
    assert repr(km) == f"<KMResult: {len(km.groups)} groups, {subjects} subjects>"
    cox = results["cox"]
    assert repr(cox) == f"<CoxResult: 2 terms, {cox.n} subjects, {cox.events} events>"


@pytest.mark.parametrize("name", ["km", "logrank", "cox", "logistic", "count", "crosstab"])
def test_html_is_valid_and_holds_the_printed_numbers(results, name) -> None:
    result = results[name]
    checker = parsed(result._repr_html_())
    assert "table" in checker.tags and "th" in checker.tags and "td" in checker.tags
    shown = " ".join(checker.text)
    # every row of the printed tables is in the HTML, named in words as the CLI names it
    frame = result.to_frame().reset_index()
    words = {"cox": model_term_label, "logistic": model_term_label}.get(name, str)
    if name == "km":
        words = lambda g: group_label(g, result.by)  # noqa: E731
    for col in frame.columns[:1]:
        for value in frame[col].astype(str):
            assert words(value) in shown
    if name == "km":
        for g in result.groups:
            assert f"{g.events}" in shown and f"{g.n}" in shown
    if name == "cox":
        assert f"n = {result.n}" in shown


def test_html_escapes_a_hostile_label(results) -> None:
    km = results["km"]
    groups = [g.model_copy(update={"group": HOSTILE}) for g in km.groups[:1]] + km.groups[1:]
    hostile = km.model_copy(update={"groups": groups})
    markup = hostile._repr_html_()
    assert "<script" not in markup and "&lt;script&gt;" in markup
    assert "&amp;" in markup
    checker = parsed(markup)
    assert HOSTILE in "".join(checker.text)  # shown as written, markup brackets included
    assert "script" not in checker.tags and "bold" not in checker.tags
    assert HOSTILE in str(hostile)


def test_km_frame_is_the_summary_one_row_per_group(results) -> None:
    km: KMResult = results["km_freireich"]
    frame = km.to_frame()
    assert list(frame.columns) == [
        "group",
        "n",
        "events",
        "median_days",
        "median_ci_low",
        "median_ci_high",
        "survival_1y",
        "survival_1y_ci_low",
        "survival_1y_ci_high",
        "survival_3y",
        "survival_3y_ci_low",
        "survival_3y_ci_high",
        "survival_5y",
        "survival_5y_ci_low",
        "survival_5y_ci_high",
    ]
    # Freireich 1963 (weeks as days here): 21 per arm, 9 relapses on 6-MP and 21 on placebo;
    # medians 23 (6-MP) and 8 (placebo), as lifelines' KaplanMeierFitter gives
    rows = frame.set_index("group")
    assert rows.loc["6-MP", ["n", "events"]].tolist() == [21, 9]
    assert rows.loc["placebo", ["n", "events"]].tolist() == [21, 21]
    assert rows.loc["6-MP", "median_days"] == 23 and rows.loc["placebo", "median_days"] == 8
    assert rows["survival_1y"].isna().all()  # past every follow-up (35 weeks)
    assert frame["n"].dtype.kind == "i" and frame["median_days"].dtype.kind == "f"


def test_km_steps_frame_is_the_step_table(results) -> None:
    km = results["km"]
    steps = km.to_frame(steps=True)
    assert list(steps.columns) == [
        "group",
        "time",
        "at_risk",
        "events",
        "survival",
        "ci_low",
        "ci_high",
    ]
    assert len(steps) == sum(len(g.table) for g in km.groups)
    first = km.groups[0].table[0]
    assert steps.iloc[0]["survival"] == pytest.approx(first.survival)


def test_cox_frame_is_the_coefficient_table(results) -> None:
    frame = results["cox"].to_frame()
    assert frame.index.name == "term" and list(frame.index) == ["age_at_diagnosis", "sex[M]"]
    assert list(frame.columns) == ["coef", "se", "hr", "ci_low", "ci_high", "p"]


def test_results_without_steps_say_so(results) -> None:
    with pytest.raises(NoStepTable, match="cox results have no step table"):
        results["cox"].to_frame(steps=True)


def test_crosstab_frame_unchanged(results) -> None:
    frame = results["crosstab"].to_frame()
    assert isinstance(frame, pd.DataFrame) and "Total" in frame.columns

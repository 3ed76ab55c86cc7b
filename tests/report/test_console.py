"""The CLI's node table: a node with too small a cohort reads as such, not as a refusal."""

from __future__ import annotations

from rich.console import Console

from ccdp.disclosure.refusals import REASONS, TOO_FEW
from ccdp.federation.study import NodeStatus, StudyResult
from ccdp.report.console import print_study


def test_node_table_says_too_few_for_a_small_cohort_and_refused_otherwise() -> None:
    small = REASONS["min_cohort"].split(":")[0]
    result = StudyResult(
        study_id="s",
        title="t",
        analysis="count",
        nodes={
            "FR": NodeStatus(status="refused", reason=f"{small}: the cohort is small"),
            "DE": NodeStatus(status="refused", reason="does not answer 'count'"),
            "IT": NodeStatus(status="answered"),
        },
    )
    console = Console(record=True, width=200)
    print_study(result, console)
    cells = [
        [c.strip() for c in ln.split("│")[1:-1]]
        for ln in console.export_text().splitlines()
        if ln.startswith("│")
    ]
    status = {row[0]: row[1] for row in cells}
    assert status == {"FR": TOO_FEW, "DE": "refused", "IT": "answered"}


def test_titles_and_reasons_print_as_written_never_as_markup() -> None:
    """A study title or a node's reason is text a person wrote: brackets in it are shown, not
    read as rich markup (a closing tag would end the print in a MarkupError)."""
    title = "Relapse [/] study [bold]x[/bold] [red]"
    result = StudyResult(
        study_id="s",
        title=title,
        analysis="count",
        error="spec [/x] refused",
        nodes={"FR": NodeStatus(status="refused", reason="does not answer [/] 'count'")},
    )
    console = Console(record=True, width=200)
    print_study(result, console)
    text = console.export_text()
    assert "spec [/x] refused" in text and "does not answer [/] 'count'" in text

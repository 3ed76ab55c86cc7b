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

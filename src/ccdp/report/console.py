"""Print results and node statuses as tables a statistician recognises (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from ccdp.analyses.tables import frame_table

if TYPE_CHECKING:
    from ccdp.federation.study import StudyResult


def print_study(result: StudyResult, console: Console | None = None) -> None:
    """The result table, then one line per node with its status and reason."""
    console = console or Console()
    if result.result is not None:
        console.print(f"[bold]{escape(result.title)}[/] ({result.analysis})")
        if hasattr(result.result, "__rich__"):
            console.print(result.result)
        else:
            console.print(frame_table(result.to_frame()))
    else:
        why = result.error or "too few nodes answered"
        console.print(f"[bold red]no result[/] ({result.analysis}): {escape(why)}", highlight=False)
    from ccdp.report.html import dedup_line, node_label, shown_reason

    line = dedup_line(result)
    if line is not None:
        console.print(escape(line), highlight=False)

    nodes = result.node_frame()
    pairs = zip(nodes["status"], nodes["reason"], strict=True)
    nodes["status"] = [node_label(st, why) for st, why in pairs]
    nodes["reason"] = [shown_reason(why) for why in nodes["reason"]]
    console.print(frame_table(nodes, "nodes"))


def print_result(study: dict[str, Any]) -> None:
    """Print a finished hub study as `ccdp run` prints, plus any late answers."""
    from ccdp.federation.client import study_result

    console = Console()
    print_study(study_result(study["result"]), console)
    for late in study.get("late_answers", []):
        console.print(
            f"[yellow]late[/]: node {late['node']} answered round {late['round']} at "
            f"{late['received_at']}, after the deadline; not used"
        )

"""The demo's progress when its output is piped (a CI log, `| tee`): one line per step done,
in full, never `0/1`."""

from __future__ import annotations

import io

from rich.console import Console

from ccdp.demo.partnership import LineProgress, load_studies, progress_bar


def test_piped_progress_says_each_step_once_in_full():
    buf = io.StringIO()
    console = Console(file=buf, width=80)  # a file: not a terminal, and narrow
    with progress_bar(console) as progress:
        assert isinstance(progress, LineProgress)
        one = progress.add_task("synthesising 6 registries (messy)", total=1)
        progress.update(one, completed=1)
        studies = load_studies()
        task = progress.add_task("running studies through the hub", total=len(studies))
        for st in studies:
            progress.update(task, description=f"study: {st['spec']['title']}")
            progress.advance(task)
        progress.update(task, description="studies done")
    steps = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    assert steps[0] == "synthesising 6 registries (messy): done"
    assert steps[1:] == [
        f"study: {st['spec']['title']}: {i}/{len(studies)}" for i, st in enumerate(studies, 1)
    ]

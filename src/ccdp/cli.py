"""The `ccdp` command: the root app, with every command group (ccdp.commands) added in one place.

The order below is the order of `ccdp --help` (plain commands first, then groups, each in the
order added); tests/test_cli_help.py holds it. Command modules keep heavy imports inside their
functions so that `ccdp --help` stays fast (benchmarks/bench_startup.py).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from typer.core import TyperOption

from ccdp.commands import (
    classify,
    cohort,
    demo,
    dictionary,
    export,
    hub,
    ingest,
    linkage,
    node,
    project,
    quality,
    referral,
    run,
    synth,
    trial,
)
from ccdp.commands import map as map_
from ccdp.errors import CcdpError


def _no_type_for_flags() -> None:
    """Typer's help shows every option's type, flags included (`--json <bool>`), which reads
    as if the flag took a value: flags show none."""
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_no_type_for_flags()

app = typer.Typer(
    name="ccdp",
    help="Childhood cancer data partnership: harmonise, federate, analyse, govern.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        import ccdp

        typer.echo(f"ccdp {ccdp.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print ccdp's version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """Childhood cancer data partnership: harmonise, federate, analyse, govern."""


# Plain commands, in the order `ccdp --help` lists them ...
app.command("dictionary")(dictionary.dictionary)
app.command("run")(run.run)
app.command("submit")(hub.submit)
app.command("demo")(demo.demo)
app.command("classify")(classify.classify)
app.command("synth")(synth.synth)
app.command("ingest")(ingest.ingest)
app.command("quality")(quality.quality)
app.command("edits")(quality.edits)
# ... then the groups, in theirs.
app.add_typer(cohort.cohort_app, name="cohort")
app.add_typer(node.node_app, name="node")
app.add_typer(hub.hub_app, name="hub")
app.add_typer(hub.study_app, name="study")
app.add_typer(project.project_app, name="project")
app.add_typer(map_.map_app, name="map")
app.add_typer(ingest.quarantine_app, name="quarantine")
app.add_typer(trial.trial_app, name="trial")
app.add_typer(referral.referral_app, name="referral")
app.add_typer(export.export_app, name="export")
app.add_typer(export.import_app, name="import")
app.add_typer(linkage.linkage_app, name="linkage")


def main() -> None:
    """Entry point: run the app, turning ccdp's own errors into one clear line and exit code 2."""
    try:
        app()
    except CcdpError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)

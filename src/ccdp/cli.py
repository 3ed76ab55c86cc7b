"""The `ccdp` command. Thin: each stage's `commands` module registers its commands on `app`.

Stage command modules keep heavy imports inside their functions so that `ccdp --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from typer.core import TyperOption

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

# One line per stage; each module defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "ccdp.model.commands",
    "ccdp.federation.commands",
    "ccdp.cohort.commands",
    "ccdp.federation.node.commands",
    "ccdp.federation.hub.commands",
    "ccdp.federation.demo.commands",
    "ccdp.governance.commands",
    "ccdp.terminology.commands",
    "ccdp.synth.commands",
    "ccdp.ingest.map_commands",
    "ccdp.ingest.commands",
    "ccdp.quality.commands",
    "ccdp.clinical.trial_commands",
    "ccdp.clinical.referral_commands",
]


@app.callback()
def _root() -> None:
    """Childhood cancer data partnership: harmonise, federate, analyse, govern."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point: run the app, turning ccdp's own errors into one clear line and exit code 2."""
    try:
        app()
    except CcdpError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)

"""`ccdp run SPEC --store A --store B ...`: a federated study, every store a node, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def run(
    spec: Path = typer.Argument(..., help="Study spec (YAML or JSON)."),
    store: list[Path] = typer.Option(..., "--store", "-s", help="A node store; repeat per node."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    project: Path | None = typer.Option(
        None,
        "--project",
        help="A project file whose protocol registers this study: run it as a registered "
        "study (exact, as a node that accepted the project answers it).",
    ),
) -> None:
    """Run a study over the given node stores, each releasing what it would release to a
    researcher; print the result and each node's status."""
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import load_study, registered_hashes, run_study
    from ccdp.report.console import print_study

    study = load_study(spec)
    hashes = registered_hashes(study, project) if project is not None else frozenset()
    result = run_study(study, InProcessTransport(list(store), registered=hashes))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print_study(result)
    if result.result is None:
        raise typer.Exit(1)

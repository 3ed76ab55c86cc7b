"""`ccdp demo`: the partnership on one machine (see ccdp.demo.partnership)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for stores, logs, report."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the report."),
    keep_running: bool = typer.Option(
        False,
        "--keep-running",
        help="Leave the hub and node agents up until Ctrl-C (or SIGTERM, SIGHUP).",
    ),
    seed: int = typer.Option(2024, "--seed", help="Seed of the synthetic registries."),
    patients: int = typer.Option(9000, "--patients", help="Patients across all countries."),
) -> None:
    """Synthesise six countries, start a hub and node agents, run studies, write a report."""
    from ccdp.demo.partnership import Stopped, open_in_browser, run_demo

    try:
        report = run_demo(out, seed=seed, patients=patients, keep_running=keep_running)
    except Stopped as exc:  # every child already stopped; the shell's code for that signal
        typer.echo(f"demo {exc}; the hub and node agents are stopped", err=True)
        raise typer.Exit(128 + exc.signum) from None
    if not no_browser:
        open_in_browser(report)
    typer.echo(str(report))

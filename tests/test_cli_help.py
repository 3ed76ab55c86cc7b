"""The CLI's help: every command and option says what it is for, and flags take no value."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from ccdp.cli import app


def commands(group, path: tuple[str, ...] = ()):
    yield path, group
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from commands(sub, (*path, name))


def tree() -> list:
    return list(commands(typer.main.get_command(app)))


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, cmd in tree():
        if path and not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for p in cmd.params:
            if p.param_type_name == "option" and not p.help:
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, missing


def test_flags_are_shown_without_a_value() -> None:
    runner = CliRunner()
    for path, _ in tree():
        out = runner.invoke(app, [*path, "--help"], terminal_width=100).output
        assert "<bool>" not in out, " ".join(path)

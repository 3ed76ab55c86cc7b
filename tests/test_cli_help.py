"""The CLI's help: every command and option says what it is for, flags take no value, and the
whole help tree (every command's text and the order commands are listed in) stays as it is."""

from __future__ import annotations

from pathlib import Path

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


SNAPSHOT = Path(__file__).parent / "data" / "cli_help_tree.txt"


def help_tree() -> str:
    """Every command's `--help`, as /work/tools/snap.py writes the snapshot (fixed width, no
    colour), each headed by `=== ccdp PATH`."""
    runner = CliRunner()
    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = []
    for path, _ in tree():
        r = runner.invoke(app, [*path, "--help"], terminal_width=100, env=env)
        out.append(f"=== ccdp {' '.join(path)}\n{r.output}")
    return "\n".join(out)


def test_help_tree_unchanged() -> None:
    """Moving command modules must not change what `ccdp --help` shows, nor its order (Typer
    lists plain commands, then groups, each in the order they were added)."""
    expected = SNAPSHOT.read_text(encoding="utf-8")
    got = help_tree()
    assert got == expected, (
        f"the CLI help tree differs from {SNAPSHOT}. If the change is deliberate, rewrite the "
        "snapshot with `python -m tests.test_cli_help` (from the repository root) and commit it "
        "with the change that explains it."
    )


def test_help_imports_no_heavy_library() -> None:
    """`ccdp --help` stays fast: the command modules import their libraries (and the stages)
    inside the command functions (benchmarks/bench_startup.py measures the time)."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    heavy = ["pandas", "numpy", "pyarrow", "duckdb", "pydantic", "fastapi", "matplotlib", "yaml"]
    code = f"import sys, ccdp.cli; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [], f"importing ccdp.cli loads {out.stdout.strip()}"


def test_a_hub_worker_starts_without_the_figure_library_or_the_data_frames() -> None:
    """A hub worker (server, API, dashboard) imports no matplotlib, pandas, DuckDB, pyarrow or
    scipy: the dashboard draws its own SVG, the hub opens no node store, and the analyses load
    these at their first study (benchmarks/README.md: a worker's start)."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    heavy = {"matplotlib", "pandas", "duckdb", "pyarrow", "scipy"}
    code = (
        "import sys, ccdp.federation.hub.server, ccdp.federation.hub.app, ccdp.web.dashboard, "
        "ccdp.commands.hub; "
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [], f"a hub worker imports {out.stdout.strip()}"


def test_a_serving_hub_worker_loads_the_count_in_the_background() -> None:
    """What the worker no longer loads before serving, it loads once serving (a warm-up
    thread), so that its first study does not wait for pandas and the count either."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    code = (
        "import sys, tempfile, time\n"
        "from fastapi.testclient import TestClient\n"
        "from ccdp.federation.hub.app import Hub, create_app\n"
        "from ccdp.federation.hub.db import open_database\n"
        "from ccdp.federation.hub.studies import SpecExecutor\n"
        "db = f'sqlite:///{tempfile.mkdtemp()}/hub.db'\n"
        "app = create_app(Hub(open_database(db)), SpecExecutor())\n"
        "before = 'pandas' in sys.modules\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/api/health').status_code == 200\n"
        "    end = time.monotonic() + 60\n"
        "    while 'ccdp.analyses.count' not in sys.modules and time.monotonic() < end:\n"
        "        time.sleep(0.05)\n"
        "print(before, 'ccdp.analyses.count' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr


if __name__ == "__main__":  # deliberately rewrite the snapshot (see test_help_tree_unchanged)
    SNAPSHOT.write_text(help_tree(), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")

"""docs/deploy.md's commands, run as written with two workers on a fresh PostgreSQL database.

The fenced block after `<!-- deploy-commands -->` is read from the doc; only the values of its
three `export` lines are this test's (a database it creates and drops, a key in a temporary
folder, a free port). Every other line runs verbatim under `bash -euo pipefail`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ccdp.federation.hub.server import HubServeError, check_workers
from tests.conftest import ROOT, cli_env
from tests.federation.netutil import free_port
from tests.federation.pg import temporary_database

DOC = ROOT / "docs" / "deploy.md"


def deploy_commands() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- deploy-commands -->\n```bash\n(.+?)\n```", text, flags=re.S)
    assert found, "docs/deploy.md lost its <!-- deploy-commands --> block"
    return found.group(1).splitlines()


def with_values(lines: list[str], values: dict[str, str]) -> list[str]:
    """The doc's lines with this test's value on each `export NAME=…` line it names."""
    out = []
    for line in lines:
        m = re.match(r"export (\w+)=", line)
        out.append(
            f"export {m.group(1)}={values[m.group(1)]}" if m and m.group(1) in values else line
        )
    return out


def test_the_doc_runs_two_workers_and_names_the_values_it_lets_a_deployer_change():
    lines = deploy_commands()
    exports = [re.match(r"export (\w+)=", line) for line in lines]
    assert {m.group(1) for m in exports if m} == {"CCDP_HUB_DB", "CCDP_HUB_AUDIT_KEY", "HUB_PORT"}
    assert any(line.startswith("ccdp hub serve --workers 2 ") for line in lines)


def test_n_workers_on_sqlite_are_refused_in_one_line():
    with pytest.raises(HubServeError, match=r"^--workers 2 needs a PostgreSQL database"):
        check_workers("sqlite:///hub.db", 2)
    check_workers("sqlite:///hub.db", 1)
    check_workers("postgresql+psycopg://u@h/db", 4)


@pytest.mark.slow
def test_deploy_doc_commands_run_as_written_with_two_workers(tmp_path: Path):
    if shutil.which("pg_dump") is None or shutil.which("curl") is None:
        pytest.fail("the deploy doc's commands need pg_dump and curl (apt-get install them)")
    shim = tmp_path / "bin" / "ccdp"  # `ccdp` is this tree's
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ccdp "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = cli_env()
    env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    port = free_port()
    with temporary_database() as db:
        values = {
            "CCDP_HUB_DB": db,
            "CCDP_HUB_AUDIT_KEY": str(tmp_path / "hub.audit.key"),
            "HUB_PORT": str(port),
        }
        script = "\n".join(with_values(deploy_commands(), values))
        (tmp_path / "deploy.sh").write_text(
            "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script + "\n"
        )
        done = subprocess.run(
            ["bash", str(tmp_path / "deploy.sh")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "Traceback" not in out, out
        assert "with 2 workers" in out
        assert '"name":"admin"' in out.replace(" ", "")
        tables = int(done.stdout.strip().splitlines()[-1])
        assert tables >= 10  # the dump holds the hub's tables
        with psycopg.connect(db.replace("+psycopg", "")) as conn:
            (sessions,) = conn.execute("SELECT count(*) FROM web_sessions").fetchone() or (None,)
        assert sessions == 0
    assert (tmp_path / "hub.dump").stat().st_size > 0

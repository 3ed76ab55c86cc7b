"""README's two commands are the contract with a new user; CI must run the same test command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env
from tests.federation.netutil import free_port


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_main_job_and_test_command():
    main_job, tests = _readme_commands()
    assert "ccdp " in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines(), "'.ci/run' must run README's test command verbatim"


def _bash_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def _ccdp_on_path(folder: Path) -> dict[str, str]:
    """An environment whose `ccdp` is this tree's (`python -m ccdp` with its source first)."""
    shim = folder / "bin" / "ccdp"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ccdp "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = cli_env()
    env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    for var in ("CCDP_TOKEN", "CCDP_NODE_TOKEN", "CCDP_HUB_DB"):
        env.pop(var, None)
    return env


def _run_script(folder: Path, script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by bash as a user would paste it (strict mode, background jobs stopped at
    the end), with this tree's `ccdp`; it must succeed without a traceback."""
    (folder / "script.sh").write_text(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script + "\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        ["bash", "script.sh"],
        cwd=folder,
        env=_ccdp_on_path(folder),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.mark.slow
def test_readme_networked_walk_through_runs_as_a_script(tmp_path):
    """The networked recipe pasted into a script, as written (a free port instead of 8700,
    small registries): it must reach a result without a human waiting between lines."""
    (block,) = [b for b in _bash_blocks() if "ccdp hub serve" in b and "ccdp synth" in b]
    port = str(free_port())
    script = block.replace("8700", port).replace("--patients 3000", "--patients 300")
    assert port in script and "--patients 300" in script
    proc = _run_script(tmp_path, script)
    # `ccdp study result` printed the count by ICCC group and country of both nodes
    assert "FR" in proc.stdout and "DE" in proc.stdout and "count" in proc.stdout.lower()
    with socket.socket() as s:  # the recipe stopped the hub: nothing listens on its port
        assert s.connect_ex(("127.0.0.1", int(port))) != 0


def _yaml_value(value: object) -> str:
    """A default as the policy file writes it (a simple fraction as `1/3`)."""
    from fractions import Fraction

    if isinstance(value, float) and not value.is_integer():
        frac = Fraction(value).limit_denominator(100)
        if abs(float(frac) - value) < 1e-12:
            return f"{frac.numerator}/{frac.denominator}"
    if value is None or isinstance(value, bool | list):
        return json.dumps(value)
    return str(value)


def policy_defaults_line() -> str:
    """Every key of the node policy with its default, in the model's order."""
    from ccdp.disclosure.policy import NodePolicy

    pairs = (
        f"`{name}: {_yaml_value(field.get_default(call_default_factory=True))}`"
        for name, field in NodePolicy.model_fields.items()
    )
    return ", ".join(pairs)


def test_readme_lists_every_policy_default_as_the_model_has_it():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- policy-defaults[^>]*-->\n(.+?)\n<!-- /policy-defaults -->", text, re.S)
    assert found, "README.md: the policy defaults paragraph between its markers is missing"
    shown = " ".join(found.group(1).split())
    assert shown == policy_defaults_line(), (
        "README.md's policy defaults differ from NodePolicy's; put this between the markers:\n"
        + policy_defaults_line()
    )


GOVERNANCE_SETUP = """\
ccdp synth regs --countries FR --patients 400
ccdp ingest regs/FR --store FR.duckdb
FR_TOKEN=$(ccdp hub add-node FR --country FR --db sqlite:///hub.db | tail -1)
ANA_TOKEN=$(ccdp hub add-user ana --role researcher --db sqlite:///hub.db | tail -1)
BOB_TOKEN=$(ccdp hub add-user bob --role board --db sqlite:///hub.db | tail -1)
HUB=http://127.0.0.1:PORT
ccdp hub serve --db sqlite:///hub.db --port PORT &
ccdp hub wait $HUB --timeout 120
CCDP_NODE_TOKEN=$FR_TOKEN ccdp node run --store FR.duckdb --hub $HUB &
sed 's/^nodes: .*/nodes: [FR]/' PROJECT > project.yaml
"""

# the project's first registered study, as `ccdp submit` takes it, once the project has its id
STUDY = (
    "printf 'project: %s\\ntitle: Leukaemia cases by sex and age group\\nanalysis: count\\n"
    "cohort: {iccc_group: [I], diagnosis_date: {from: 2006-01-01, to: 2012-12-31}}\\n"
    'by: [sex, age_group]\\n\' "$P" > study.yaml'
)


@pytest.mark.slow
def test_readme_governance_flow_runs_as_a_script(tmp_path):
    """The five governance commands, as written, after a setup that gives them what the README
    says they need (a hub without --open, a board user, a node agent, a project file): the
    project is requested, approved, accepted at the node, shown, and its registered study is
    answered (exactly, at once: the node's custodian accepted it)."""
    (block,) = [b for b in _bash_blocks() if "ccdp project review" in b]
    lines = block.splitlines()
    assert len(lines) == 5 and "ccdp submit study.yaml" in lines[-1]
    port = str(free_port())
    setup = GOVERNANCE_SETUP.replace("PORT", port).replace(
        "PROJECT", str(ROOT / "examples" / "projects" / "leukaemia-outcome.yaml")
    )
    script = setup + "\n".join(lines[:-1]) + "\n" + STUDY + "\n" + lines[-1]
    proc = _run_script(tmp_path, script)
    out = proc.stdout
    assert "approved" in out and "accepted" in out  # review, then the node's decision shown
    assert "Leukaemia cases by sex and age group" in out and "answered" in out

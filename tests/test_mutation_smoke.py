"""The mutation script (benchmarks/mutation.py, docs/testing.md) keeps working: two mutants of
the KM median rule `curve <= 0.5 + 1e-12`, run against the median-boundary test. Moving the
tolerance below one half (`+` -> `-`) must be killed; `<=` -> `<` is the known equivalent mutant
(the tolerance already admits a curve at exactly 0.5), so it survives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, cli_env


def test_the_mutation_script_kills_a_km_median_mutant(tmp_path: Path) -> None:
    out = tmp_path / "mutants.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "mutation.py"),
        *("--module", "analyses/km.py", "--match", r"0\.5 \+ 1e-12", "--sample", "2"),
        *("--tests", "tests/analyses/test_km_median_boundary.py", "--no-baseline"),
        *("--json", str(out)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[2/2]" in proc.stdout  # progress is printed
    outcome = {r["label"]: r["outcome"] for r in json.loads(out.read_text())["results"]}
    assert outcome == {"`+` -> `-`": "killed", "`<=` -> `<`": "survived"}

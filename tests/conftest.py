"""Shared fixtures: run the CLI from this source tree, and locate the shared seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def cli_env() -> dict[str, str]:
    """Environment that makes `python -m ccdp` import this tree's source, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_ccdp(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run `ccdp ARGS` in a subprocess, as a user would, and return the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "ccdp", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ccdp {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def ccdp():
    """Callable fixture: ccdp("classify", "--morphology", "9836", ...)."""
    return run_ccdp

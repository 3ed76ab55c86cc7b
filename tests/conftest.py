"""Shared fixtures: run the CLI from this source tree, and locate the shared seeds.

Under CI (the variable `CI` set to any truthy value, see `under_ci`) a skipped test is a failure:
a green CI run has run every test. Tests that drive a browser carry the `browser` marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

BROWSER_FIXTURES = frozenset({"page", "browser", "partnership"})


def under_ci() -> bool:
    """True when `CI` is set to anything but empty, "0", "false", "no" or "off" (any case):
    the one rule for "a missing service fails rather than skips"."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def chromium_path() -> str | None:
    """The chromium binary: `$CCDP_CHROMIUM` when set (and nothing else then), else `chromium`
    on PATH, else Debian's /usr/bin/chromium; None when there is none."""
    named = os.environ.get("CCDP_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses a browser fixture (tests/web's `page`, `browser`, `partnership`)
    carries the `browser` marker, so `-m "not browser"` deselects them all."""
    for item in items:
        if BROWSER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under CI a skip (in setup, call or teardown; an `xfail` is not a skip) becomes a failure
    that names the reason: a service or a package the suite needs is missing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and under_ci():
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI={os.environ.get('CI')!r}, which fails instead: {reason}\n"
            "(CI must run every test; install what is missing or unset CI locally)"
        )


def cli_env() -> dict[str, str]:
    """Environment that makes `python -m ccdp` import this tree's source, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_ccdp(*args: object, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
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


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """Under CI a module that skips itself while collected (`importorskip` at module level,
    `pytest.skip(allow_module_level=True)`) is a collection error, not a silent gap."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci():
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped under CI={os.environ.get('CI')!r}: {reason}"

"""README's two commands are the contract with a new user; CI must run the same test command."""

from __future__ import annotations

import re

from tests.conftest import ROOT


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

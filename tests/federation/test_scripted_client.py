"""The client commands as a script runs them: `ccdp hub wait` before the first call to a hub
just started in the background, and one clear line (exit 2, no traceback) for an empty or
malformed study id, the mark of a script whose `ccdp submit` failed."""

from __future__ import annotations

import pytest

from tests.conftest import run_ccdp
from tests.federation.netutil import LiveHub, free_port
from tests.federation.standin import StandinExecutor


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        yield hub


@pytest.mark.parametrize(
    ("study_id", "said"),
    [("", "the study id is empty"), ("a/b", "'a/b' is not a study id")],
)
@pytest.mark.parametrize("command", ["result", "show"])
def test_a_bad_study_id_is_one_line_and_exit_2(live, command, study_id, said):
    token = live.hub.add_user("ana", "researcher")
    proc = run_ccdp("study", command, study_id, "--hub", live.url, "--token", token, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and said in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_hub_wait_returns_once_the_hub_answers(live):
    proc = run_ccdp("hub", "wait", live.url, "--timeout", "30")
    assert proc.stdout.startswith(f"hub at {live.url} answers")


def test_hub_wait_gives_up_with_one_line():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_ccdp("hub", "wait", url, "--timeout", "0.5", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"the hub at {url} did not answer within 0.5 s" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

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


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
@pytest.mark.parametrize(
    "command", [["study", "list"], ["node", "run", "--store", "FR.duckdb", "--open"]]
)
def test_a_token_file_others_may_read_is_refused_in_one_line(tmp_path, command, mode):
    token_file = tmp_path / "token"
    token_file.write_text("ccdp-user-secret\n")
    token_file.chmod(mode)
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_ccdp(*command, "--hub", url, "--token-file", token_file, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "ccdp-user-secret" not in proc.stderr
    assert f"--token-file {token_file}: mode {mode:04o} lets others read it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_token_file_of_its_owner_only_is_read(live, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(live.hub.add_user("ana", "researcher") + "\n")
    token_file.chmod(0o600)
    proc = run_ccdp("study", "list", "--json", "--hub", live.url, "--token-file", token_file)
    assert proc.stdout.strip() == "[]"

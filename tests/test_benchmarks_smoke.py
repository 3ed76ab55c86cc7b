"""Every benchmark runs at a tiny size, so that none rots unnoticed between measurements (two
did: bench_network.py after the governance work, bench_audit.py after the audit's search was
rewritten). Only that each script runs to the end is checked here: the figures are measured at
full size by hand (benchmarks/README.md), never asserted in tests, where a loaded machine would
make them flaky."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env

BENCHMARKS = ROOT / "benchmarks"

# each script with arguments that make it small (seconds), and where it may write
TINY: dict[str, list[str]] = {
    "bench_audit.py": ["--tumours", "3000", "--studies", "3", "--out", "{tmp}"],
    "bench_bignode.py": ["--sizes", "300,600", "--base-patients", "300", "--out", "{tmp}"],
    "bench_classify.py": ["--rows", "2000", "--repeat", "1"],
    "bench_cox.py": ["--rows", "3000", "--nodes", "2", "--repeat", "1"],
    "bench_event_times.py": ["--rows", "3000", "--repeat", "1"],
    "bench_exchange.py": ["--patients", "300", "--out", "{tmp}"],
    "bench_federated.py": ["--tumours", "3000", "--nodes", "2", "--repeat", "1", "--cox"],
    "bench_glm.py": ["--rows", "3000", "--nodes", "2"],
    "bench_hub_rounds.py": ["--nodes", "3", "--rounds", "2", "--repeat", "1"],
    "bench_hub_start.py": ["--runs", "1"],
    "bench_ingest.py": ["--patients", "300", "--out", "{tmp}"],
    "bench_ledger.py": ["--tumours", "2000", "--releases", "10", "--repeat", "1"],
    "bench_linkage.py": [
        *("--febrl-rows", "300", "--repeat", "1", "--patients", "2000"),
        *("--scale-registries", "2", "--scale-records", "500"),
    ],
    "bench_mapping.py": ["--patients", "300", "--repeat", "1"],
    "bench_network.py": [
        *("--nodes", "2", "--repeat", "1", "--cox-nodes", "2", "--cox-fits", "1"),
        *("--patients", "100"),
    ],
    "bench_startup.py": ["--runs", "1"],
    "bench_synth.py": ["--patients", "300", "--out", "{tmp}"],
    "bench_wirecheck.py": ["--patients", "100", "--reads", "3", "--rounds", "1"],
    "load/bench_asgi.py": ["--clients", "3", "--requests", "2", "--nodes", "2"],
    "load/bench_loopreads.py": ["--reads", "20", "--rounds", "1", "--nodes", "2", "--studies", "2"],
    "load/bench_reads.py": ["--clients", "4", "--requests", "3", "--nodes", "2", "--studies", "2"],
}

# scripts a test already runs end to end, at the size that test needs (not twice in one CI run)
RUN_ELSEWHERE: dict[str, str] = {
    "load/bench_load.py": "tests/federation/test_load_ci.py",
}


def run_benchmark(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """One benchmark script, run as a user runs it (its own process, the CLI's environment)."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=600,
    )


def test_every_benchmark_has_a_tiny_run():
    found = [*BENCHMARKS.glob("bench_*.py"), *BENCHMARKS.glob("load/bench_*.py")]
    assert sorted(p.relative_to(BENCHMARKS).as_posix() for p in found) == sorted(
        [*TINY, *RUN_ELSEWHERE]
    )
    for test in RUN_ELSEWHERE.values():
        assert (ROOT / test).is_file(), f"{test} no longer exists: give the script a TINY run"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path):
    args = [a.replace("{tmp}", str(tmp_path / "out")) for a in TINY[script]]
    proc = run_benchmark(script, args, tmp_path)
    assert proc.returncode == 0, f"{script} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{script} printed no figure"


@pytest.mark.slow
def test_the_network_benchmark_meters_every_hub_worker_and_the_database(tmp_path: Path):
    """`bench_network.py --workers 2` on PostgreSQL: the hub's CPU is its workers' (the
    supervisor alone spends next to none) and the database server's CPU has its own column."""
    from tests.federation.pg import ADMIN_URL, require_server

    require_server()
    args = [*TINY["bench_network.py"], "--db", ADMIN_URL, "--workers", "2"]
    proc = run_benchmark("bench_network.py", args, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "| what | 2 hub workers, 2 count / 2 cox node agents | one process |" in proc.stdout
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    cpu = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows if len(r) == 5}
    assert cpu["CPU ms"] == ["hub", "node agents", "PostgreSQL server", "this process"]
    hub, _agents, database, _here = (float(c) for c in cpu["cox fit"])
    assert hub > 0 and database > 0, cpu  # a fit's rounds cost both: neither went unmetered

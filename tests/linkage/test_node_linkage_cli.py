"""The protocol as the operators run it, each step a `ccdp` command in its own process: `ccdp
linkage serve` with `add-node` / `add-admin` / `create-run` at the trusted party, and `ccdp
linkage run --token-file` at both nodes at once (the stores are built in-process by the code
`ccdp synth`, `ccdp linkage secret` and `ccdp ingest` run; test_encode_at_ingest runs those
commands). The service's log and database file are read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.conftest import cli_env, run_ccdp
from tests.federation.netutil import ccdp_args, free_port, kill, spawn, wait_http
from tests.linkage.linkwire_kit import found_pairs, link_groups, registries, true_pairs


def _token_file(folder: Path, name: str, token: str) -> Path:
    path = folder / f"{name}.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def test_two_nodes_link_with_the_commands(tmp_path: Path) -> None:
    stores, truth = registries(tmp_path, "DE,PL", 1500, seed=2)  # as synth, secret, ingest
    db = str(tmp_path / "service" / "linkage.db")
    (tmp_path / "service").mkdir()
    tokens = {
        n: run_ccdp("linkage", kind, n, "--db", db).stdout.strip()
        for n, kind in (("DE", "add-node"), ("PL", "add-node"), ("boss", "add-admin"))
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "service" / "serve.log"
    serve = spawn(ccdp_args("linkage", "serve", "--db", db, "--port", str(port)), log)
    try:
        wait_http(url, 30)
        boss = _token_file(tmp_path, "boss", tokens["boss"])
        run_ccdp(
            "linkage",
            "create-run",
            "r1",
            "--service",
            url,
            "--nodes",
            "DE,PL",
            "--token-file",
            str(boss),
        )
        procs = {
            cc: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ccdp",
                    "linkage",
                    "run",
                    "--store",
                    str(stores[cc]),
                    "--service",
                    url,
                    "--run",
                    "r1",
                    "--timeout",
                    "60",
                    "--json",
                    "--token-file",
                    str(_token_file(tmp_path, cc, tokens[cc])),
                ],
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for cc in stores
        }
        outs = {cc: p.communicate(timeout=120) for cc, p in procs.items()}
    finally:
        kill(serve)
    for cc, (stdout, stderr) in outs.items():
        assert procs[cc].returncode == 0, stderr
        assert json.loads(stdout)["run"] == "r1"
    pairs = true_pairs(truth, stores)
    found = found_pairs(link_groups(stores))
    assert (
        pairs and len(found & pairs) >= 0.75 * len(pairs) and len(found & pairs) >= 0.9 * len(found)
    )
    # the service's log and database: no name, no site id, no stored key
    text = log.read_text()
    assert "Traceback" not in text
    con = duckdb.connect(str(stores["PL"]), read_only=True)
    keys = [r[0] for r in con.execute("SELECT patient_id FROM linkage_encoding").fetchall()]
    con.close()
    ids = (tmp_path / "synth" / "PL" / "identifiers.csv").read_text().splitlines()[1:]
    site_ids = [line.split(",")[0] for line in ids]
    raw = (tmp_path / "service" / "linkage.db").read_bytes()
    for k in keys + site_ids:
        assert k not in text and k.encode() not in raw

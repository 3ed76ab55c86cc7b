"""Node operations with the real CLI: TLS on loopback, manual release, offline signed files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ccdp.disclosure.policy import set_policy_value
from ccdp.federation import resultfile
from ccdp.federation.hub.app import Hub, import_file
from ccdp.federation.hub.db import open_database
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.pending import PendingStore, describe
from ccdp.federation.study import load_study, run_study
from tests.conftest import run_ccdp
from tests.federation.netutil import (
    HubProcess,
    ccdp_args,
    last_line,
    processes,
    spawn,
    wait_until,
)
from tests.storekit import build_store, random_registry

COUNT = "analysis: count\nby: [sex]\n"


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 signed by its own key (cryptography)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccdp test hub")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "hub.crt", tmp_path / "hub.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def setup_hub(tmp_path, names=("fr",)):
    """Stores and registrations (the CLI's add-node/add-user are exercised in test_end_to_end)."""
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(open_database(db))
    stores, tokens = {}, {}
    for i, n in enumerate(names):
        stores[n] = build_store(tmp_path / f"{n}.duckdb", random_registry(40 + i, 120, "FR", n))
        tokens[n] = hub.add_node(n, "FR")
    user = hub.add_user("ana", "researcher")
    (tmp_path / "count.yaml").write_text(COUNT)
    return db, stores, tokens, user


def local_run(spec, stores) -> dict:
    """`ccdp run --json` in this process (the CLI form is compared in test_end_to_end)."""
    return run_study(load_study(spec), InProcessTransport(list(stores))).to_json()


@pytest.mark.slow
def test_tls_hub_with_self_signed_certificate(tmp_path):
    certfile, keyfile = self_signed(tmp_path)
    db, stores, tokens, user = setup_hub(tmp_path)
    hub = HubProcess(db, tmp_path / "hub.log", scheme="https", verify=str(certfile))
    hub.args = ccdp_args(
        "hub",
        "serve",
        "--db",
        db,
        "--port",
        hub.port,
        "--certfile",
        certfile,
        "--keyfile",
        keyfile,
        "--open",
    )
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        # an unverified client is refused at the TLS handshake; plain HTTP gets nothing
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(hub.url + "/api/health")
        with pytest.raises(httpx.HTTPError):
            httpx.get(hub.url.replace("https", "http") + "/api/health", timeout=3)
        node = ccdp_args("node", "run", "--open", "--store", stores["fr"], "--hub", hub.url)
        node += ["--token", tokens["fr"], "--cacert", str(certfile), "--poll", "2"]
        procs.append(spawn(node, tmp_path / "node.log"))
        out = run_ccdp(
            "submit",
            tmp_path / "count.yaml",
            "--hub",
            hub.url,
            "--token",
            user,
            "--cacert",
            certfile,
            "--wait",
            "--json",
            "--max-wait",
            "60",
        )
        local = local_run(tmp_path / "count.yaml", [stores["fr"]])
        remote = json.loads(out.stdout)
        assert remote["result"] == local["result"]
        assert remote["nodes"] == {"fr": {"status": "answered", "reason": None}}
    assert ssl.PEM_cert_to_DER_cert(certfile.read_text())  # a real PEM certificate was used


@pytest.mark.slow
def test_manual_release_waits_for_the_operator(tmp_path):
    db, stores, tokens, user = setup_hub(tmp_path, ("fr", "de"))
    for n in stores:
        set_policy_value(stores[n], "release", "manual")  # as `ccdp node policy set` does
    hub = HubProcess(db, tmp_path / "hub.log")
    hubdb = Hub(open_database(db))
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        for n, store in stores.items():
            args = ccdp_args("node", "run", "--open", "--store", store, "--hub", hub.url)
            procs.append(spawn([*args, "--token", tokens[n], "--poll", "2"], tmp_path / f"{n}.log"))
        sid = last_line(
            run_ccdp("submit", tmp_path / "count.yaml", "--hub", hub.url, "--token", user).stdout
        )

        def held(n):  # what `ccdp node pending --json` lists (its CLI is run below)
            return [describe(i) for i in PendingStore(stores[n]).all() if i.state == "held"]

        fr_items = wait_until(lambda: held("fr"), 60, 0.5)
        de_items = wait_until(lambda: held("de"), 60, 0.5)
        assert fr_items[0]["study"] == sid and fr_items[0]["state"] == "held"
        # nothing reaches the hub while answers are held
        assert hubdb.study(sid)["status"] == "running"
        run_ccdp("node", "release", fr_items[0]["id"][:10], "--store", stores["fr"])
        reason = "cell counts under review by our ethics board"
        run_ccdp("node", "refuse", de_items[0]["id"], "--store", stores["de"], "--reason", reason)
        study = wait_until(
            lambda: (s := hubdb.study(sid))["status"] in ("done", "failed") and s, 60, 0.3
        )
    nodes = study["result"]["nodes"]
    assert nodes["fr"]["status"] == "answered"
    assert nodes["de"] == {"status": "refused", "reason": reason}
    assert (
        held("fr") == []
        and json.loads(
            run_ccdp("node", "pending", "--store", stores["fr"], "--all", "--json").stdout
        )[0]["state"]
        == "sent"
    )


@pytest.mark.slow
@pytest.mark.parametrize("signing", ["token", "ed25519"])
def test_offline_site_answers_by_signed_file(tmp_path, signing):
    db, stores, tokens, user = setup_hub(tmp_path, ("fr",))
    key = tmp_path / "fr.key"
    if signing == "ed25519":
        pub = last_line(run_ccdp("node", "keygen", key).stdout)
        run_ccdp("hub", "set-key", "fr", pub, "--db", db)
    hub = HubProcess(db, tmp_path / "hub.log")
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        sid = last_line(
            run_ccdp("submit", tmp_path / "count.yaml", "--hub", hub.url, "--token", user).stdout
        )
        hubdb = Hub(open_database(db))
        wait_until(lambda: hubdb.study(sid)["rounds"] == 0, 30)
        taskfile = last_line(run_ccdp("hub", "tasks", "fr", "--db", db, "--out", tmp_path).stdout)
        sign = ["--token", tokens["fr"]] if signing == "token" else ["--key", key]
        result = last_line(
            run_ccdp("node", "answer", "--open", taskfile, "--store", stores["fr"], *sign).stdout
        )
        # a tampered file is refused and changes nothing
        body = json.loads(Path(result).read_text())
        body["answer"]["reason"] = "edited on the way"
        forged = tmp_path / "forged.json"
        forged.write_text(json.dumps(body))
        bad = run_ccdp("hub", "import", forged, "--db", db, check=False)
        assert bad.returncode == 2 and "signature is invalid" in bad.stderr
        ok = run_ccdp("hub", "import", result, "--db", db)
        assert "accepted" in ok.stdout
        again = import_file(hubdb, resultfile.read(Path(result)))
        assert again.status == "duplicate"
        study = wait_until(lambda: (s := hubdb.study(sid))["status"] == "done" and s, 30, 0.3)
    local = local_run(tmp_path / "count.yaml", [stores["fr"]])
    assert study["result"]["result"] == local["result"]


@pytest.mark.slow
def test_switching_to_manual_release_applies_to_a_running_agent(tmp_path):
    """`ccdp node policy set release manual` while the agent runs: the next answer is held."""
    db, stores, tokens, user = setup_hub(tmp_path, ("fr",))
    hub = HubProcess(db, tmp_path / "hub.log")
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        args = ccdp_args("node", "run", "--open", "--store", stores["fr"], "--hub", hub.url)
        procs.append(spawn([*args, "--token", tokens["fr"], "--poll", "2"], tmp_path / "fr.log"))
        first = last_line(
            run_ccdp("submit", tmp_path / "count.yaml", "--hub", hub.url, "--token", user).stdout
        )
        hubdb = Hub(open_database(db))
        wait_until(lambda: hubdb.study(first)["status"] == "done", 60, 0.3)
        run_ccdp("node", "policy", "set", "release", "manual", "--store", stores["fr"])
        second = last_line(
            run_ccdp("submit", tmp_path / "count.yaml", "--hub", hub.url, "--token", user).stdout
        )
        held = wait_until(
            lambda: [i for i in PendingStore(stores["fr"]).all() if i.state == "held"], 60, 0.5
        )
        assert held[0].task.study_id == second
        assert hubdb.study(second)["status"] == "running"  # nothing left the node

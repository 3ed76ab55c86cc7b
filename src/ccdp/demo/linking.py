"""The demo's record linkage (issue 25): the custodians' shared secret, a linkage service run by
a trusted party on loopback, one run over the six registries, and what the demo (which knows the
synthesiser's truth) can say of it: the pairs found against the true pairs, and the pooled
incidence the truth gives (each child counted once by `truth.json`, not by the linkage).

The demo plays every custodian, so it writes one random secret for the run and gives it to each
node; in a partnership the custodians agree on it among themselves (docs/linkage.md).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ccdp.demo.processes import (
    DemoError,
    Processes,
    _cli,
    _env,
    _wait_up,
    free_port,
    node_token,
)

RUN_ID = "demo-linkage"
ADMIN = "demo-admin"


def write_secret(out: Path) -> Path:
    """A fresh random secret for this demo run, in a file only its owner reads (0600)."""
    path = out / "linkage.secret"
    with suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def give_secret(stores: dict[str, Path], secret_file: Path) -> None:
    """Each custodian sets the shared secret in its node config before ingest, so encodings
    are computed at ingest (the identifiers themselves are never stored)."""
    from ccdp.federation.linkage.node import read_secret_file, set_secret

    secret = read_secret_file(secret_file)
    for store in stores.values():
        set_secret(store, secret)


@dataclass
class Linkage:
    """A finished run: its id, each node's summary (`ccdp linkage run --json`), the seconds."""

    run_id: str
    nodes: dict[str, dict[str, Any]]
    seconds: float
    quality: dict[str, Any] = field(default_factory=dict)


def start_service(out: Path, procs: Processes, countries: list[str]) -> tuple[str, dict[str, str]]:
    """The linkage service as its own process on loopback with its own SQLite database; its
    admin and each node registered first (tokens shown once, kept in memory). Returns the
    service's URL and the tokens (the nodes' and the admin's, under ADMIN)."""
    from ccdp.federation.linkage.db import open_database
    from ccdp.federation.linkage.service import LinkageService

    for f in out.glob("linkage.db*"):
        f.unlink()
    for f in out.glob("linkage.audit*"):
        f.unlink()
    db = f"sqlite:///{out / 'linkage.db'}"
    service = LinkageService(open_database(db))
    tokens = {c: service.add_member(c, "node").token for c in countries}
    tokens[ADMIN] = service.add_member(ADMIN, "admin").token
    url = f"http://127.0.0.1:{free_port()}"
    port = url.rsplit(":", 1)[1]
    args = _cli("linkage", "serve", "--db", db, "--port", port)
    procs.start("linkage service", args, out / "logs" / "linkage-service.log")
    _wait_up(url, procs, what="the linkage service")
    return url, tokens


def link_registries(
    out: Path,
    procs: Processes,
    stores: dict[str, Path],
    progress: Any,
) -> Linkage:
    """Start the service, create the run, and run `ccdp linkage run` at every node at once (each
    waits for the others at the service); each node's link groups end in its `link_group`."""
    from ccdp.federation.linkage.client import LinkageClient

    t0 = time.monotonic()
    task = progress.add_task("linking registries (linkage service)", total=1 + len(stores))
    url, tokens = start_service(out, procs, list(stores))
    with LinkageClient(url, tokens[ADMIN]) as admin:
        admin.create_run(RUN_ID, list(stores))
    progress.advance(task)
    logs = out / "logs"
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for c, store in stores.items():
            args = _cli("linkage", "run", "--store", store, "--service", url, "--run", RUN_ID)
            with (
                (logs / f"linkage-{c}.json").open("wb") as fh,
                (logs / f"linkage-{c}.log").open("ab") as eh,
            ):
                env = {**_env(), **node_token(tokens[c])}
                cmd = [*args, "--json", "--timeout", "300"]
                running[c] = subprocess.Popen(cmd, stdout=fh, stderr=eh, env=env)
        for c, proc in running.items():
            if proc.wait() != 0:
                raise DemoError(f"linkage run of {c} failed; see {logs / f'linkage-{c}.log'}")
            progress.advance(task)
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    nodes = {
        c: json.loads((logs / f"linkage-{c}.json").read_text(encoding="utf-8")) for c in stores
    }
    return Linkage(RUN_ID, nodes, time.monotonic() - t0)


# -- what the demo knows: the synthesiser's truth -------------------------------------------------
def _stored_keys(stores: dict[str, Path]) -> dict[str, bytes]:
    from ccdp.store.config import pseudonym_key

    return {c: pseudonym_key(s, create=False) for c, s in stores.items()}


def _read(store: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def true_pairs(truth: dict[str, Any], stores: dict[str, Path]) -> set[frozenset[tuple[str, str]]]:
    """truth.json's cross-border pairs as (country, stored key) pairs, both records ingested."""
    from ccdp.ingest.pseudonym import pseudonym

    keys = _stored_keys(stores)
    sql = "SELECT patient_id FROM patient"
    held = {c: {r[0] for r in _read(s, sql)} for c, s in stores.items()}
    out: set[frozenset[tuple[str, str]]] = set()
    for pair in truth["cross_border_duplicates"]:
        recs = [
            (c, pseudonym(keys[c], pid))
            for pid, c in zip(pair["patient_ids"], pair["countries"], strict=True)
            if c in stores
        ]
        if len(recs) == 2 and all(k in held[c] for c, k in recs):
            out.add(frozenset(recs))
    return out


def found_pairs(stores: dict[str, Path]) -> set[frozenset[tuple[str, str]]]:
    """The pairs the nodes' link groups imply (every two records of one group)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for c, s in stores.items():
        for pid, gid in _read(s, "SELECT patient_id, group_id FROM link_group"):
            groups.setdefault(str(gid), []).append((c, str(pid)))
    out: set[frozenset[tuple[str, str]]] = set()
    for members in groups.values():
        for i, a in enumerate(members):
            out.update(frozenset((a, b)) for b in members[i + 1 :])
    return out


def linkage_quality(truth: dict[str, Any], stores: dict[str, Path]) -> dict[str, Any]:
    """Pairs found, true pairs, and precision and recall against the truth."""
    from ccdp.linkage.evaluate import precision_recall

    found, real = found_pairs(stores), true_pairs(truth, stores)
    precision, recall = precision_recall(found, real)  # type: ignore[arg-type]
    return {
        "found": len(found),
        "true": len(real),
        "correct": len(found & real),
        "precision": precision,
        "recall": recall,
    }


def truth_stores(stores: dict[str, Path], truth: dict[str, Any], to: Path) -> dict[str, Path]:
    """Copies of the stores (with their keys and policies, without their ledgers) whose link
    groups are truth.json's pairs instead of the linkage's: each child counted once by the
    truth, its copy registered where it was treated abroad set aside."""
    from ccdp.ingest.pseudonym import pseudonym

    if to.exists():
        shutil.rmtree(to)
    to.mkdir(parents=True)
    copies: dict[str, Path] = {}
    for c, store in stores.items():
        for f in store.parent.glob(f"{store.stem}.*"):
            if f.is_file() and not f.name.endswith((".ledger.db", ".wal")):
                shutil.copy(f, to / f.name)
        copies[c] = to / store.name
    keys = _stored_keys(stores)
    set_aside = set(truth["cross_border_copy_ids"])
    rows: dict[str, list[tuple[str, str, bool]]] = {c: [] for c in stores}
    for i, pair in enumerate(truth["cross_border_duplicates"]):
        for pid, c in zip(pair["patient_ids"], pair["countries"], strict=True):
            if c in stores:
                rows[c].append((pseudonym(keys[c], pid), f"truth-{i}", pid not in set_aside))
    for c, recs in rows.items():
        con = duckdb.connect(str(copies[c]))
        try:
            con.execute("DELETE FROM link_group")
            if not recs:
                continue
            con.executemany(
                "INSERT INTO link_group (patient_id, run_id, group_id, keep, group_size) "
                "VALUES (?, 'truth', ?, ?, 2)",
                [list(r) for r in recs],
            )
        finally:
            con.close()
    return copies


def truth_result(spec: dict[str, Any], stores: dict[str, Path]) -> Any:
    """The study over the truth's stores, in this process (no hub): registered, so answered
    exactly as the demo's nodes answer it (a StudyResult)."""
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import load_study, run_study
    from ccdp.governance.registered import study_hash

    study = load_study(spec)
    hashes = {study_hash(study.analysis, study.params, study.cohort_json())}
    return run_study(study, InProcessTransport(list(stores.values()), registered=hashes))


WHY = (
    "The six registries were linked without any identifier leaving a node: each node encoded "
    "its children's names, birth date and sex at ingest (Bloom-filter encodings under a secret "
    "the custodians share), a linkage service run by a trusted party (not the hub) compared "
    "the encodings and gave each node only its own records' link groups, and which copy of a "
    "child pooled results keep. Studies leave out the copies set aside (dedup, the default). "
    "The demo knows the synthesiser's truth, so it can say how well the linkage did."
)
POOLED_ON = "incidence_pooled"
ON = "with deduplication (released: each linked child once)"


def reference_results(
    spec: dict[str, Any], stores: dict[str, Path], truth: dict[str, Any], to: Path
) -> tuple[Any, Any]:
    """What the demo, playing every custodian, computes at the nodes without releasing it: the
    study with dedup off, and with dedup on over the truth's link groups (each on copies of the
    stores with a ledger of their own, so that neither is withheld as the other's difference)."""
    copies = truth_stores(stores, truth, to)
    off = truth_result({**spec, "dedup": False}, copies)
    for f in to.glob("*.ledger.db*"):
        f.unlink()
    return off, truth_result(spec, copies)


def linkage_section(out: Path, linkage: Linkage, stores: dict[str, Path], entries: list[Any]):
    """The report's section: the run per node, its pairs against truth.json, and the pooled
    incidence with dedup on (released) and off (computed at the nodes, not released: a released
    twin beside the de-duplicated studies would determine the children each node set aside, and
    the acceptance audit finds it) beside the same study over the truth's link groups."""
    from ccdp.federation.client import study_result
    from ccdp.report.html import LinkageSection

    truth = json.loads((out / "exports" / "truth.json").read_text(encoding="utf-8"))
    quality = linkage_quality(truth, stores)
    linkage.quality = quality
    by_key = {e.key: e for e in entries}
    rec = (by_key[POOLED_ON].record.get("result") or {}) if POOLED_ON in by_key else {}
    released = study_result(rec) if rec.get("result") else None
    spec = dict(by_key[POOLED_ON].spec) if POOLED_ON in by_key else {"analysis": "incidence"}
    off, true = reference_results(spec, stores, truth, out / "truth-stores")
    section = LinkageSection(
        why=WHY,
        quality=quality,
        nodes=[{"node": c, **linkage.nodes[c]} for c in stores],
        pooled=[
            (ON, released),
            ("without deduplication (computed at the nodes, not released)", off),
            ("truth (truth.json: its cross-border copies set aside, not the linkage groups)", true),
        ],
        seconds=linkage.seconds,
        released_from=ON,
    )
    write_summary(out / "linkage.json", section)
    return section


def write_summary(path: Path, section: Any) -> None:
    """The section's figures as JSON beside the report (for a reader's script and the tests):
    the pairs, each node's run, and each pooled row's cases, person-years and ASR."""
    rows = []
    for label, study in section.pooled:
        frame = None if study is None or study.result is None else study.result.to_frame()
        first = {} if frame is None else frame.reset_index(drop=True).iloc[0].to_dict()
        rows.append(
            {"label": label}
            | {k: _plain(first.get(k)) for k in ("cases", "person_years", "crude_rate", "asr")}
        )
    summary = {
        "quality": section.quality,
        "nodes": section.nodes,
        "pooled": rows,
        "seconds": round(section.seconds, 1),
    }
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def _plain(value: Any) -> float | None:
    """A number as JSON takes it (None for a withheld or missing one)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number

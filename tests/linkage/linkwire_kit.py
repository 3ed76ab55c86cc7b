"""Plumbing for the linkage protocol's tests: a real linkage service (uvicorn, loopback HTTP) in a
thread, synthetic registries with identifiers ingested into real DuckDB stores with a shared
secret, and the truth's duplicate pairs keyed as the stores key them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
from sqlalchemy import MetaData

from ccdp.federation.linkage.app import MAX_BODY, MAX_UPLOAD, create_app
from ccdp.federation.linkage.db import open_database
from ccdp.federation.linkage.models import RunRow
from ccdp.federation.linkage.node import ingest_hook, set_secret
from ccdp.federation.linkage.service import LinkageService
from ccdp.ingest.pipeline import ingest_native
from ccdp.ingest.pseudonym import pseudonym
from ccdp.store.config import pseudonym_key
from ccdp.synth import generate
from tests.federation.netutil import LiveServer, wait_until

SECRET = bytes.fromhex("5f" * 8 + "a1" * 8 + "03" * 16)


class LiveService(LiveServer):
    """The linkage service on a free loopback port (its link worker started with the app), its
    database a SQLite file in `folder` or the database `db_url` names (PostgreSQL: give
    `audit_key`); `link` replaces the linkage core (a test's failing or held link)."""

    def __init__(
        self,
        folder: Path,
        max_upload: int = MAX_UPLOAD,
        max_body: int = MAX_BODY,
        db_url: str | None = None,
        audit_key: Path | None = None,
        link: Any = None,
        service_class: type[LinkageService] = LinkageService,
    ):
        self.db = folder / "linkage.db"
        self.db_url = db_url or f"sqlite:///{self.db}"
        self.service = service_class(open_database(self.db_url, audit_key), link=link)
        app = create_app(self.service, max_body=max_body, max_upload=max_upload, worker_poll=1.0)
        super().__init__(app)

    def http(self, token: str | None = None) -> httpx.Client:
        return self.client(token, timeout=60)

    def token(self, name: str, kind: str = "node") -> str:
        return self.service.add_member(name, kind).token

    def state(self, run_id: str) -> str:
        with self.service.sessions() as s:
            run = s.get(RunRow, run_id)
            return run.state if run is not None else "absent"

    def wait_state(self, run_id: str, *states: str, timeout: float = 30) -> str:
        """Wait (bounded) until the run is in one of `states`; returns it."""
        return wait_until(lambda: self.state(run_id) in states and self.state(run_id), timeout)

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the service's database, read back with SQLAlchemy."""
        engine = self.service.sessions.kw["bind"]
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: [tuple(r) for r in conn.execute(table.select())]
                for name, table in meta.tables.items()
            }


def registries(
    folder: Path, countries: str, patients: int, seed: int = 1, secret: bytes | None = SECRET
) -> tuple[dict[str, Path], dict[str, Any]]:
    """`ccdp synth --with-identifiers` then ingest of each country into its own store, each
    with the linkage secret set first (as `ccdp linkage secret` then `ccdp ingest` do)."""
    out = folder / "synth"
    result = generate(
        str(out), countries=countries, patients=patients, seed=seed, with_identifiers=True
    )
    stores: dict[str, Path] = {}
    for cc in countries.split(","):
        store = folder / f"{cc}.duckdb"
        if secret is not None:
            set_secret(store, secret)
        ingest_native(store, out / cc, progress=False, on_identifiers=ingest_hook(store))
        stores[cc] = store
    return stores, result.truth()


def true_pairs(truth: dict[str, Any], stores: dict[str, Path]) -> set[frozenset[tuple[str, str]]]:
    """The truth's cross-border pairs among `stores`, each record as (country, stored key)."""
    keys = {cc: pseudonym_key(s, create=False) for cc, s in stores.items()}
    out = set()
    for d in truth["cross_border_duplicates"]:
        ccs, ids = d["countries"], d["patient_ids"]
        if all(c in stores for c in ccs):
            out.add(frozenset((c, pseudonym(keys[c], i)) for c, i in zip(ccs, ids, strict=True)))
    return out


def link_groups(stores: dict[str, Path]) -> dict[str, list[tuple[str, str, bool]]]:
    """group id -> [(country, stored key, keep)] from every store's `link_group`."""
    groups: dict[str, list[tuple[str, str, bool]]] = {}
    for cc, store in stores.items():
        con = duckdb.connect(str(store), read_only=True)
        try:
            for pid, gid, keep in con.execute(
                "SELECT patient_id, group_id, keep FROM link_group"
            ).fetchall():
                groups.setdefault(gid, []).append((cc, pid, keep))
        finally:
            con.close()
    return groups


def found_pairs(groups: dict[str, list[tuple[str, str, bool]]]) -> set[frozenset[tuple[str, str]]]:
    """Every pair of records that share a group."""
    out = set()
    for members in groups.values():
        recs = [(c, p) for c, p, _ in members]
        for i in range(len(recs)):
            for j in range(i + 1, len(recs)):
                out.add(frozenset((recs[i], recs[j])))
    return out


def secret_file(folder: Path, secret: bytes, name: str = "secret.txt") -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return path


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def core_pairs(
    folder: Path, stores: dict[str, Path], threshold: float
) -> set[frozenset[tuple[str, str]]]:
    """The pairs the linkage core finds in one process from the sites' identifiers files (the
    reference the protocol must reproduce exactly), keyed as the stores key them."""
    import itertools

    import pandas as pd

    from ccdp.linkage import encode, link

    ids = {cc: pd.read_csv(folder / "synth" / cc / "identifiers.csv", dtype=str) for cc in stores}
    labels = link({cc: encode(f, SECRET) for cc, f in ids.items()}, threshold=threshold)
    groups: dict[int, list[tuple[str, str]]] = {}
    for cc, frame in ids.items():
        key = pseudonym_key(stores[cc], create=False)
        for pid, label in zip(frame["patient_id"], labels[cc].tolist(), strict=True):
            groups.setdefault(int(label), []).append((cc, pseudonym(key, pid)))
    return {
        frozenset(pair)
        for members in groups.values()
        for pair in itertools.combinations(members, 2)
    }


_BUILT: dict[tuple[str, int, int], Path] = {}


def partnership_copy(
    folder: Path, countries: str = "DE,PL", patients: int = 1500, seed: int = 2
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Registries as `registries` builds them, built once per test process and copied into
    `folder` (stores, node configs, audit logs, the synth output), so each test starts clean."""
    import atexit
    import json
    import shutil
    import tempfile

    key = (countries, patients, seed)
    if key not in _BUILT:
        built = Path(tempfile.mkdtemp(prefix="linkwire-"))
        atexit.register(shutil.rmtree, built, True)
        _, truth = registries(built, countries, patients, seed)
        (built / "truth.json").write_text(json.dumps(truth))
        _BUILT[key] = built
    shutil.copytree(_BUILT[key], folder, dirs_exist_ok=True)
    stores = {cc: folder / f"{cc}.duckdb" for cc in countries.split(",")}
    return stores, json.loads((folder / "truth.json").read_text())


def run_nodes(
    url: str, stores: dict[str, Path], tokens: dict[str, str], run_id: str, timeout: float = 60
) -> dict[str, Any]:
    """Every node's `ccdp linkage run` at once, each in its own thread and HTTP client; each
    node's summary, or the exception it raised."""
    import threading

    from ccdp.federation.linkage.client import LinkageClient
    from ccdp.federation.linkage.node import run

    out: dict[str, Any] = {}

    def one(cc: str) -> None:
        with LinkageClient(url, tokens[cc]) as client:
            try:
                out[cc] = run(stores[cc], client, run_id, timeout=timeout)
            except Exception as exc:  # the caller asserts on it
                out[cc] = exc

    threads = [threading.Thread(target=one, args=(cc,)) for cc in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    return out


def stored_clks(stores: dict[str, Path]) -> list[bytes]:
    """Every encoding the nodes' stores hold (to search a database or a page for them)."""
    out: list[bytes] = []
    for store in stores.values():
        con = duckdb.connect(str(store), read_only=True)
        try:
            out += [bytes(r[0]) for r in con.execute("SELECT clk FROM linkage_encoding").fetchall()]
        finally:
            con.close()
    return out

"""The node's side of record linkage: the shared secret, its encodings, and a run with the service.

The secret lives in the node config beside the store (`<stem>.node.yaml`, 0600, key
`linkage_secret`), never in the store, the hub or the service. Encodings are made from an
identifiers export, at ingest (the hook below) or again after a rotation (`reencode`), and stored
in `linkage_encoding` by stored patient key; the identifiers themselves are never written.

A run: each stored key becomes a per-run pseudonym (HMAC under a random key kept in the node
config only while the run is open) and the encodings go to the service; once every registry has
uploaded, the node fetches its linked records, sends their earliest diagnosis and last-contact
years (only theirs),
waits for the keep decision, maps the pseudonyms back and replaces `link_group` in one
transaction, then confirms so the service deletes them.
"""

from __future__ import annotations

import hmac
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ccdp.errors import CcdpError
from ccdp.federation.linkage import core
from ccdp.federation.linkage.client import LinkageClient
from ccdp.federation.node.audit import AuditLog
from ccdp.ingest.pipeline import IdentifiersHook, identified_patients
from ccdp.store import NodeStore
from ccdp.store.config import (
    NodeConfigError,
    load_node_config,
    pseudonym_key,
    update_node_config,
)

SECRET_KEY = "linkage_secret"
RUN_KEYS = "linkage_run_keys"
MIN_SECRET_BYTES = 16


class NodeLinkageError(CcdpError):
    """The node cannot encode or link: no secret, no encodings, a mismatched run."""


# -- the secret --------------------------------------------------------------------------------
def read_secret_file(path: Path) -> bytes:
    """The secret as the custodians shared it: hex digits (>= 32), else the file's text as
    UTF-8 (>= 16 bytes); a file others may read is refused (it is a key)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeLinkageError(f"--file {path}: cannot read it ({exc})") from None
    if mode & 0o077:
        raise NodeLinkageError(f"--file {path}: mode {mode:04o} lets others read it; chmod 600")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise NodeLinkageError(
            f"--file {path}: the linkage secret must be at least {MIN_SECRET_BYTES} bytes"
        )
    return secret


def set_secret(store: Path, secret: bytes) -> str:
    """Keep the secret in the node config (0600); returns its id (not the secret)."""
    update_node_config(store, **{SECRET_KEY: secret.hex()})
    return core.secret_id(secret)


def load_secret(store: Path) -> bytes | None:
    """The node's linkage secret, None when none was set."""
    value = load_node_config(store).get(SECRET_KEY)
    if value is None:
        return None
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise NodeLinkageError(f"{SECRET_KEY} in the node config of {store} is not hex") from None


# -- encodings ---------------------------------------------------------------------------------
def write_encodings(con: duckdb.DuckDBPyConnection, ids: pd.DataFrame, secret: bytes) -> int:
    """Encode the identifiers (`patient_id` = stored key) and upsert them into
    `linkage_encoding`, inside the caller's transaction; returns how many."""
    if ids.empty:
        return 0
    enc = core.encode_frame(ids, secret)
    frame = pd.DataFrame(
        {
            "patient_id": ids["patient_id"].astype(str).to_numpy(),
            "clk": [enc.clk(i) for i in range(len(ids))],
            "block_year": [int(y) if y else None for y in enc.years.tolist()],
        }
    )
    con.register("_linkage_new", frame)
    try:
        con.execute(
            "INSERT OR REPLACE INTO linkage_encoding "
            "(patient_id, clk, schema_id, secret_id, block_year, encoded_at) "
            "SELECT patient_id, CAST(clk AS BLOB), ?, ?, CAST(block_year AS INTEGER), "
            "current_timestamp FROM _linkage_new",
            [core.schema_id(), core.secret_id(secret)],
        )
    finally:
        con.unregister("_linkage_new")
    return len(frame)


@dataclass
class IngestEncoder:
    """The hook `ccdp ingest` hands to ingest: it counts what it encoded for the report."""

    secret: bytes
    encoded: int = 0

    def __call__(self, con: duckdb.DuckDBPyConnection, ids: pd.DataFrame) -> None:
        self.encoded += write_encodings(con, ids, self.secret)


def ingest_hook(store: Path) -> IngestEncoder | None:
    """The encoder for an ingest into `store`, None when the node has no linkage secret (its
    identifiers are then pseudonymised and dropped as before, and nothing is encoded)."""
    secret = load_secret(store)
    return IngestEncoder(secret) if secret is not None else None


def reencode(store: Path, identifiers: Path) -> dict[str, int]:
    """Replace every encoding of the store with ones made, under the current secret, from an
    identifiers export (after a rotation), in one transaction."""
    secret = load_secret(store)
    if secret is None:
        raise NodeLinkageError(f"no linkage secret for {store}: ccdp linkage secret first")
    if not identifiers.is_file():
        raise NodeLinkageError(f"--identifiers {identifiers}: no such file")
    try:
        key: bytes | None = pseudonym_key(store, create=False)
    except NodeConfigError:  # a store ingested without identifiers keeps the sites' own keys
        key = None
    with NodeStore(store) as st, st.transaction() as con:
        try:
            ids = identified_patients(con, identifiers, key)
        except duckdb.Error as exc:
            raise NodeLinkageError(f"{identifiers}: {str(exc).splitlines()[0]}") from None
        if "patient_id" not in ids.columns:
            raise NodeLinkageError(f"{identifiers}: no patient_id column")
        before = con.execute("SELECT count(*) FROM linkage_encoding").fetchone()
        con.execute("DELETE FROM linkage_encoding")
        n = write_encodings(con, ids, secret)
    AuditLog.for_store(store).append(
        {
            "time": _now(),
            "event": "linkage-reencoded",
            "encoded": n,
            "replaced": int(before[0]) if before else 0,
            "secret_id": core.secret_id(secret),
        }
    )
    return {"encoded": n, "replaced": int(before[0]) if before else 0}


__all__ = ["IdentifiersHook", "IngestEncoder", "NodeLinkageError", "ingest_hook", "reencode"]


# -- a run -------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat()


def _run_key(store: Path, run_id: str) -> bytes:
    """The node's random key for this run's pseudonyms, kept only until the run is stored."""
    keys = dict(load_node_config(store).get(RUN_KEYS) or {})
    if run_id not in keys:
        keys[run_id] = secrets.token_hex(32)
        update_node_config(store, **{RUN_KEYS: keys})
    return bytes.fromhex(keys[run_id])


def _forget_run_key(store: Path, run_id: str) -> None:
    keys = dict(load_node_config(store).get(RUN_KEYS) or {})
    keys.pop(run_id, None)
    update_node_config(store, **{RUN_KEYS: keys})


def run_pseudonym(key: bytes, patient_id: str) -> str:
    """A record's name for one run: unlinkable to its stored key or to another run's."""
    return hmac.digest(key, patient_id.encode("utf-8"), "sha256")[:16].hex()


def _upload_body(store: Path, run_key: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The upload (per-run pseudonyms and encodings) and pseudonym -> stored key."""
    import base64

    secret = load_secret(store)
    if secret is None:
        raise NodeLinkageError(f"no linkage secret for {store}: ccdp linkage secret first")
    with NodeStore(store, read_only=True) as st:
        rows = st.con.execute(
            "SELECT patient_id, clk, schema_id, secret_id FROM linkage_encoding ORDER BY patient_id"
        ).fetchall()
    if not rows:
        raise NodeLinkageError(
            f"{store} holds no linkage encodings: ingest identifiers with a secret set, or "
            "ccdp linkage encode --identifiers FILE"
        )
    wanted = (core.schema_id(), core.secret_id(secret))
    if {(r[2], r[3]) for r in rows} != {wanted}:
        raise NodeLinkageError(
            f"{store}: encodings made with another schema or secret than the current one: "
            "re-encode them (ccdp linkage encode --identifiers FILE)"
        )
    back: dict[str, str] = {}
    records = []
    for pid, clk, _s, _k in rows:
        p = run_pseudonym(run_key, pid)
        back[p] = pid
        records.append({"p": p, "clk": base64.b64encode(bytes(clk)).decode()})
    bits = 8 * len(bytes(rows[0][1]))
    body = {"schema_id": wanted[0], "secret_id": wanted[1], "bits": bits, "records": records}
    return body, back


def linked_years(store: Path, keys: list[str]) -> dict[str, dict[str, int | None]]:
    """Each given patient's keep-rule years, as the service takes them: `year`, the earliest
    diagnosis year (None if no dated tumour), and `last`, the year of last contact (None if
    not recorded)."""
    frame = pd.DataFrame({"patient_id": keys})
    with NodeStore(store, read_only=True) as st:
        st.con.register("_linked", frame)
        try:
            rows = st.con.execute(
                "SELECT l.patient_id, min(year(t.diagnosis_date)), "
                "max(year(p.last_contact_date)) FROM _linked l "
                "LEFT JOIN tumour t USING (patient_id) LEFT JOIN patient p USING (patient_id) "
                "GROUP BY l.patient_id"
            ).fetchall()
        finally:
            st.con.unregister("_linked")
    return {pid: {"year": _int(y), "last": _int(last)} for pid, y, last in rows}


def _int(year: Any) -> int | None:
    return int(year) if year is not None else None


def wait_turn(
    client: LinkageClient, run_id: str, timeout: float, wait: float = 20.0
) -> dict[str, Any]:
    """Long-poll the run until this node's next step no longer waits on the others; backs off
    when the service answers early."""
    end = time.monotonic() + timeout
    pause = 0.2
    while True:
        left = end - time.monotonic()
        started = time.monotonic()
        status = client.status(run_id, wait=max(0.0, min(wait, left)))
        if not status["wait"]:
            return status
        if time.monotonic() >= end:
            step = "upload" if status["state"] == "open" else "years"
            late = [
                n
                for n, v in status["nodes"].items()
                if not v["uploaded" if step == "upload" else "years_sent"]
            ]
            raise NodeLinkageError(
                f"run {run_id}: still waiting for the {step} of {', '.join(late)} after "
                f"{timeout:g} s; run the command again to keep waiting"
            )
        if time.monotonic() - started < 0.5 * wait:  # answered early: do not hammer it
            time.sleep(min(pause, max(0.0, end - time.monotonic())))
            pause = min(pause * 2, 5.0)


def run(
    store: Path,
    client: LinkageClient,
    run_id: str,
    timeout: float = 600.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Take part in run `run_id`, resuming where an earlier attempt stopped: upload, wait for
    the links, send the years of the linked records only, wait for the keep decision, store
    the groups in `link_group`, confirm."""
    status = client.status(run_id)  # first: a run that does not name this node ends here
    me = status["you"]
    if status["nodes"][me]["confirmed"]:
        raise NodeLinkageError(f"run {run_id}: this node has stored and confirmed it already")
    run_key = _run_key(store, run_id)
    body, back = _upload_body(store, run_key)
    log = AuditLog.for_store(store)
    if not status["nodes"][me]["uploaded"]:
        if status["state"] != "open":
            raise NodeLinkageError(f"run {run_id} is {status['state']}: it takes no upload")
        progress(f"uploading {len(back)} encodings")
        client.upload(run_id, body)
        log.append(_entry("linkage-upload", run_id, client, records=len(back)))
    progress("waiting for the other registries")
    status = _checked(wait_turn(client, run_id, timeout), run_id)
    if status["state"] == "linked" and not status["nodes"][me]["years_sent"]:
        linked = client.groups(run_id)["records"]
        _unknown(run_id, linked, back)
        years = linked_years(store, [back[r["p"]] for r in linked])
        client.years(run_id, [{"p": r["p"], **years[back[r["p"]]]} for r in linked])
        log.append(_entry("linkage-years", run_id, client, records=len(linked)))
        status = _checked(wait_turn(client, run_id, timeout), run_id)
    got = client.groups(run_id)
    summary = store_groups(store, run_id, got["records"], back)
    client.confirm(run_id)
    _forget_run_key(store, run_id)
    log.append(_entry("linkage-linked", run_id, client, **summary))
    return {"run": run_id, "records": len(back)} | summary


def _entry(event: str, run_id: str, client: LinkageClient, **counts: int) -> dict[str, Any]:
    """A node audit record of a run's step: what was sent or stored, as counts only."""
    return {
        "time": _now(),
        "event": event,
        "run": run_id,
        "service": client.base_url[:300],
    } | counts


def _checked(status: dict[str, Any], run_id: str) -> dict[str, Any]:
    if status["state"] == "failed":
        raise NodeLinkageError(f"run {run_id} failed at the service: {status.get('error')}")
    return status


def _unknown(run_id: str, records: list[dict[str, Any]], back: dict[str, str]) -> None:
    unknown = [r["p"] for r in records if r["p"] not in back]
    if unknown:
        raise NodeLinkageError(
            f"run {run_id}: the service returned {len(unknown)} pseudonym(s) this node never sent"
        )


def store_groups(
    store: Path, run_id: str, records: list[dict[str, Any]], back: dict[str, str]
) -> dict[str, int]:
    """Replace `link_group` with this run's groups, in one transaction."""
    _unknown(run_id, records, back)
    if any(r["keep"] is None for r in records):
        raise NodeLinkageError(f"run {run_id}: the service has not decided which copy to keep")
    frame = pd.DataFrame(
        {
            "patient_id": [back[r["p"]] for r in records],
            "group_id": [str(r["group"]) for r in records],
            "keep": [bool(r["keep"]) for r in records],
            "group_size": [int(r["size"]) for r in records],
        }
    )
    with NodeStore(store) as st, st.transaction() as con:
        con.execute("DELETE FROM link_group")
        if len(frame):
            con.register("_linkage_groups", frame)
            try:
                con.execute(
                    "INSERT INTO link_group (patient_id, run_id, group_id, keep, group_size) "
                    "SELECT patient_id, ?, group_id, keep, group_size FROM _linkage_groups",
                    [run_id],
                )
            finally:
                con.unregister("_linkage_groups")
    kept = int(frame["keep"].sum()) if len(frame) else 0
    return {"linked": len(frame), "kept": kept, "set_aside": len(frame) - kept}

"""The node's side of record linkage: the shared secret, its encodings, and a run with the service.

The secret lives in the node config beside the store (`<stem>.node.yaml`, 0600, key
`linkage_secret`), never in the store, the hub or the service. Encodings are made from an
identifiers export, at ingest (the hook below) or again after a rotation (`reencode`), and stored
in `linkage_encoding` by stored patient key; the identifiers themselves are never written.

A run: each stored key becomes a per-run pseudonym (HMAC under a random key kept in the node
config only while the run is open) and the encodings go to the service; once every registry has
uploaded and the service's worker has linked them, the node fetches its linked records, sends
their earliest diagnosis and last-contact years (only theirs), waits for the keep decision,
maps the pseudonyms back and replaces `link_group` in one transaction (each row names the run),
then confirms so the service deletes them. Every step, and a run that fails or is refused, is
written to the node's audit log.
"""

from __future__ import annotations

import hmac
import re
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
from ccdp.federation.linkage.client import LinkageClient, LinkageRequestError
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


class RunFailed(NodeLinkageError):
    """The service failed the run (its linking failed); the reason it gives names no record."""


class RunCancelled(RunFailed):
    """The service's admin gave the run up; running the command again cannot resume it."""


class RunTimeout(NodeLinkageError):
    """The node stopped waiting on the others; running the command again resumes the run."""


def waiting_for(status: dict[str, Any]) -> str:
    """What this node's next step waits on, in words (the progress line)."""
    state, nodes = status["state"], status["nodes"]
    if state == "uploading":
        late = [n for n, v in nodes.items() if not v["uploaded"]]
        done = len(nodes) - len(late)
        return f"waiting for the upload of {', '.join(late)} ({done} of {len(nodes)} uploaded)"
    if state == "linking":
        since = float(status.get("linking_seconds") or 0)
        return f"the service is linking the run ({since:.0f} s since the last upload)"
    if state == "linked":
        late = [n for n, v in nodes.items() if not v["years_sent"]]
        return f"waiting for the years of {', '.join(late)}"
    return f"the run is {state}"


def wait_turn(
    client: LinkageClient,
    run_id: str,
    timeout: float,
    wait: float = 20.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Long-poll the run (each request held up to `wait` s by the service) until this node's
    next step no longer waits on the others or on the service's linking; backs off when the
    service answers early; says what it waits on whenever that changes."""
    end = time.monotonic() + timeout
    pause, said, hold = 0.2, "", 0.0  # the first look is not held: say at once what it waits on
    while True:
        started = time.monotonic()
        asked = max(0.0, min(hold, end - started))
        status = client.status(run_id, wait=asked)
        hold = wait
        if not status["wait"]:
            return status
        line = waiting_for(status)
        if line != said:
            progress(line)
            said = line
        if time.monotonic() >= end:
            raise RunTimeout(
                f"run {run_id}: after {timeout:g} s, still {line}; run the command again to "
                "keep waiting"
            )
        if asked and time.monotonic() - started < 0.5 * asked:  # answered early: do not hammer
            time.sleep(min(pause, max(0.0, end - time.monotonic())))
            pause = min(pause * 2, 5.0)


@dataclass
class _Step:
    """Which step of a run the node is at (named in the audit record of a run that stops)."""

    name: str = "status"


def run(
    store: Path,
    client: LinkageClient,
    run_id: str,
    timeout: float = 600.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Take part in run `run_id`, resuming where an earlier attempt stopped: upload, wait for
    the links, send the years of the linked records only, wait for the keep decision, store
    the groups in `link_group`, confirm. A run that fails, is refused or stops is written to
    the node's audit log too (`linkage-failed`, `-refused`, `-stopped`: the step and the
    reason, never a record-level value), then raised."""
    log = AuditLog.for_store(store)
    step = _Step()
    try:
        return _take_part(store, client, run_id, timeout, progress, log, step)
    except (NodeLinkageError, LinkageRequestError) as exc:
        log.append(_stopped(exc, run_id, client, step.name))
        if isinstance(exc, RunCancelled):  # it cannot be resumed: its pseudonyms' key goes
            _forget_run_key(store, run_id)
        raise


def _take_part(
    store: Path,
    client: LinkageClient,
    run_id: str,
    timeout: float,
    progress: Callable[[str], None],
    log: AuditLog,
    step: _Step,
) -> dict[str, Any]:
    status = _checked(client.status(run_id), run_id)  # a run not naming this node ends here
    me = status["you"]
    if status["nodes"][me]["confirmed"]:
        raise NodeLinkageError(f"run {run_id}: this node has stored and confirmed it already")
    step.name = "upload"
    run_key = _run_key(store, run_id)
    body, back = _upload_body(store, run_key)
    if not status["nodes"][me]["uploaded"]:
        if status["state"] != "uploading":
            raise NodeLinkageError(f"run {run_id} is {status['state']}: it takes no upload")
        progress(f"uploading {len(back)} encodings")
        client.upload(run_id, body)
        log.append(_entry("linkage-upload", run_id, client, records=len(back)))
    step.name = "linking"
    status = _checked(wait_turn(client, run_id, timeout, progress=progress), run_id)
    if status["state"] == "linked" and not status["nodes"][me]["years_sent"]:
        step.name = "years"
        linked = client.groups(run_id)["records"]
        _unknown(run_id, linked, back)
        progress(f"{len(linked)} records linked; sending their years (and no other record's)")
        years = linked_years(store, [back[r["p"]] for r in linked])
        client.years(run_id, [{"p": r["p"], **years[back[r["p"]]]} for r in linked])
        log.append(_entry("linkage-years", run_id, client, records=len(linked)))
        step.name = "keep"
        status = _checked(wait_turn(client, run_id, timeout, progress=progress), run_id)
    step.name = "store"
    got = client.groups(run_id)
    summary = store_groups(store, run_id, got["records"], back)
    progress(f"link_group now holds the {summary['linked']} linked records of run {run_id}")
    step.name = "confirm"
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


# a long run of hex or base64 in a reason could be a pseudonym, a key or an encoding
_OPAQUE = re.compile(r"[0-9A-Fa-f]{16,}|[A-Za-z0-9+/]{24,}={0,2}")


def _stopped(exc: Exception, run_id: str, client: LinkageClient, step: str) -> dict[str, Any]:
    """The audit record of a run that did not finish: failed at the service, refused (by the
    service, 4xx, or by this node), or stopped (a timeout, the service unreachable: run the
    command again). Its reason with any long opaque token cut out, at most 300 characters."""
    status = exc.status if isinstance(exc, LinkageRequestError) else None
    if isinstance(exc, RunCancelled):
        event = "linkage-cancelled"
    elif isinstance(exc, RunFailed):
        event = "linkage-failed"
    elif isinstance(exc, RunTimeout) or (
        isinstance(exc, LinkageRequestError) and (status is None or status >= 500)
    ):
        event = "linkage-stopped"
    else:
        event = "linkage-refused"
    entry = {
        "time": _now(),
        "event": event,
        "run": run_id[:64],
        "service": client.base_url[:300],
        "step": step,
        "reason": _OPAQUE.sub("…", str(exc))[:300],
    }
    return entry | ({"status": status} if status is not None else {})


def _checked(status: dict[str, Any], run_id: str) -> dict[str, Any]:
    if status["state"] == "failed":
        raise RunFailed(f"run {run_id} failed at the service: {status.get('error')}")
    if status["state"] == "cancelled":
        raise RunCancelled(f"run {run_id} was cancelled at the service: {status.get('error')}")
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


def link_status(store: Path) -> dict[str, Any]:
    """Which run produced the store's link groups, and what they hold: the run id every row of
    `link_group` carries (a run that linked none of this node's records leaves the table empty,
    so the run is then read from the audit log's last `linkage-linked` record), the counts,
    when they were stored, and the node's last linkage event (a later failed or refused run
    shows there)."""
    with NodeStore(store, read_only=True) as st:
        rows = st.con.execute(
            "SELECT run_id, count(*), count(*) FILTER (WHERE keep), max(linked_at) "
            "FROM link_group GROUP BY run_id ORDER BY max(linked_at)"
        ).fetchall()
    records = AuditLog.for_store(store).records()
    events = [r for r in records if str(r.get("event", "")).startswith("linkage-")]
    stored = next((r for r in reversed(events) if r["event"] == "linkage-linked"), None)
    out: dict[str, Any] = {"run": None, "linked": 0, "kept": 0, "set_aside": 0, "stored_at": None}
    if rows:
        run_id, linked, kept, at = rows[-1]
        out |= {"run": run_id, "linked": int(linked), "kept": int(kept)}
        out |= {"set_aside": int(linked) - int(kept), "stored_at": at.isoformat() if at else None}
    elif stored is not None:
        out |= {"run": stored.get("run"), "stored_at": stored.get("time")}
    if len(rows) > 1:  # not written by `run` (it replaces the table): say so rather than hide it
        out["runs_in_table"] = [r[0] for r in rows]
    last = events[-1] if events else None
    out["last_event"] = (
        {k: last[k] for k in ("event", "run", "time", "step", "reason") if k in last}
        if last
        else None
    )
    return out

"""Referring a child to the expert board from the node (`ccdp node refer`, `ccdp node
referrals`): docs/referrals.md.

The path: the node checks the child's consent (DUO:0000043, clinical care use, or the node's
statutory basis), builds the case summary from its store and passes it through the disclosure
gate (`release_case`); the summary then waits, always, beside the store until the custodian
releases it; released, it goes to the hub; the board's recommendation comes back when the node
asks. Each step is in the node's audit log with the referral's id and the digest the hub's log
also carries. The patient's key stays in the node's own referral file, never in a message or a
log record.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict

from ccdp.cohort.view import cohort_sql
from ccdp.disclosure.case import release_case
from ccdp.disclosure.policy import load_policy
from ccdp.errors import CcdpError
from ccdp.federation.client import HubClient
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.local import connect_store
from ccdp.governance.consent import Consent
from ccdp.ingest.pseudonym import pseudonym
from ccdp.store.config import pseudonym_key
from ccdp.terminology.duo import ConsentError
from ccdp.terminology.icdo3 import morphology_label
from ccdp.wire.case_summary import case_digest

CLINICAL_CARE = "DUO:0000043"
RELAPSE_VARS = ("relapse_time_band", "relapse_site_group", "bfm_strategic_group", "relapse_risk")
State = Literal["held", "sent", "withdrawn", "answered"]


class ReferralError(CcdpError):
    """The child cannot be referred from this store, or no such referral / decision."""


class ConsentRefused(ReferralError):
    """The child's consent does not permit a clinical care use, and the node has no statutory
    basis that covers it."""


class Referral(BaseModel):
    """One referral as the node keeps it (`<store stem>.referrals/<id>.json`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    patient_id: str  # the store's key: this file never leaves the node
    question: str
    summary: dict[str, Any]
    withheld: list[str]
    digest: str
    state: State = "held"
    created_at: datetime
    released_at: datetime | None = None
    hub_id: str | None = None
    recommendation: dict[str, Any] | None = None
    recommended_by: str | None = None
    recommended_at: str | None = None
    withdrawn_reason: str | None = None


# -- consent ------------------------------------------------------------------------------------
def care_use_problem(consent: str | None, mode: str) -> str | None:
    """Why the child's consent does not permit a referral for its own care, or None.

    A node whose policy is `consent: statutory` refers on that basis (a registry's statute or
    the treating hospital's duty of care covers sharing a case for the child's own care, whatever
    research uses the family consented to). Under `consent: required` the consent must include
    DUO:0000043, clinical care use."""
    if mode == "statutory":
        return None
    try:
        parsed = Consent.parse(consent)
    except ConsentError:
        return "the recorded consent is not valid DUO"
    if CLINICAL_CARE in parsed.codes:
        return None
    if parsed.empty:
        return (
            "no consent is recorded and the node's policy is consent: required "
            "(a referral needs DUO:0000043, clinical care use, or a statutory basis)"
        )
    return "the recorded consent does not include DUO:0000043 (clinical care use)"


# -- the case summary ---------------------------------------------------------------------------
def _days(d: Any, origin: date) -> int | None:
    return None if d is None else (d - origin).days


def _months(birth: date, at: date) -> int:
    months = (at.year - birth.year) * 12 + at.month - birth.month
    return months - (1 if at.day < birth.day else 0)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, args)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _tumour(con: duckdb.DuckDBPyConnection, t: dict[str, Any], view: dict[str, Any]) -> dict:
    dx = t["diagnosis_date"]
    events = _rows(
        con,
        "SELECT event_type, event_date, relapse_site, bm_blasts_pct FROM store.event "
        "WHERE tumour_id = ? ORDER BY event_date, event_id",
        [t["tumour_id"]],
    )
    treatments = _rows(
        con,
        "SELECT type, agent, protocol, start_date, end_date FROM store.treatment "
        "WHERE tumour_id = ? ORDER BY start_date NULLS LAST, treatment_id",
        [t["tumour_id"]],
    )
    markers = _rows(
        con,
        'SELECT marker, value, unit, "date" FROM store.biomarker WHERE tumour_id = ? '
        'ORDER BY "date" NULLS LAST, marker',
        [t["tumour_id"]],
    )
    relapse = None
    if view.get("time_to_relapse") is not None:
        relapse = {
            "time_band": view["relapse_time_band"],
            "site_group": view["relapse_site_group"],
            "strategic_group": view["bfm_strategic_group"],
            "risk": view["relapse_risk"],
            "day": view["time_to_relapse"],
        }
    label = morphology_label([t["morphology"]]).iloc[0]
    return {
        "diagnosis": {
            "morphology": t["morphology"],
            "behaviour": t["behaviour"],
            "topography": t["topography"],
            "label": label if isinstance(label, str) else None,
            "iccc_group": t["iccc_group"],
            "iccc_subgroup": t["iccc_subgroup"],
        },
        "immunophenotype": t["immunophenotype"],
        "cns_status": t["cns_status"],
        "wbc_at_diagnosis": t["wbc_at_diagnosis"],
        "stage_system": t["stage_system"],
        "stage": t["stage"],
        "risk_group": t["risk_group"],
        "frontline_end_day": _days(t["frontline_end_date"], dx),
        "relapse": relapse,
        "events": [
            {
                "type": e["event_type"],
                "day": _days(e["event_date"], dx),
                "relapse_site": e["relapse_site"],
                "bm_blasts_pct": e["bm_blasts_pct"],
            }
            for e in events
        ],
        "treatments": [
            {
                "type": r["type"],
                "agent": r["agent"],
                "protocol": r["protocol"],
                "start_day": _days(r["start_date"], dx),
                "end_day": _days(r["end_date"], dx),
            }
            for r in treatments
        ],
        "biomarkers": [
            {
                "marker": m["marker"],
                "value": m["value"],
                "unit": m["unit"],
                "day": _days(m["date"], dx),
            }
            for m in markers
        ],
    }


def build_case(store: Path, node: str, patient_id: str) -> tuple[dict[str, Any], list[str], Any]:
    """The raw case summary of `patient_id` (before the gate), the child's record keys (for the
    gate to look for in free text) and the consent recorded."""
    con = connect_store(store)
    try:
        patients = _rows(con, "SELECT * FROM store.patient WHERE patient_id = ?", [patient_id])
        if not patients:
            raise ReferralError(f"no patient {patient_id!r} in {store}")
        p = patients[0]
        tumours = _rows(
            con,
            "SELECT * FROM store.tumour WHERE patient_id = ? ORDER BY diagnosis_date, tumour_id",
            [patient_id],
        )
        if not tumours:
            raise ReferralError(f"patient {patient_id!r} has no tumour in {store}")
        sql = cohort_sql(["tumour_id", "time_to_relapse", *RELAPSE_VARS], "v.patient_id = ?")
        views = {v["tumour_id"]: v for v in _rows(con, sql, [node, patient_id])}
        keys = [patient_id]
        for t in tumours:
            keys.append(t["tumour_id"])
            for table, col in (("event", "event_id"), ("treatment", "treatment_id")):
                keys += [
                    r[0]
                    for r in con.execute(
                        f"SELECT {col} FROM store.{table} WHERE tumour_id = ?", [t["tumour_id"]]
                    ).fetchall()
                ]
        first_dx = tumours[0]["diagnosis_date"]
        trials = _rows(
            con,
            "SELECT trial, arm FROM store.trial_enrolment WHERE patient_id = ? ORDER BY trial",
            [patient_id],
        )
        raw = {
            "schema": "ccdp.case-summary/1",
            "age_months": _months(p["birth_date"], first_dx),
            "sex": p["sex"],
            "vital_status": p["vital_status"],
            "last_contact_day": _days(p["last_contact_date"], first_dx),
            "tumours": [_tumour(con, t, views.get(t["tumour_id"], {})) for t in tumours],
            "trials": trials,
        }
    except duckdb.Error as exc:
        raise ReferralError(f"{store}: the store cannot be read ({type(exc).__name__})") from None
    finally:
        con.close()
    return raw, keys, p.get("consent")


# -- the node's referral folder -----------------------------------------------------------------
def referrals_dir(store: Path) -> Path:
    return store.with_name(store.stem + ".referrals")


class ReferralStore:
    """The referrals of one node store, one JSON file each, written atomically; nothing is
    deleted (the folder is also the node's record of what it referred and was told)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.dir = referrals_dir(store)

    def save(self, item: Referral) -> Referral:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{item.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(item.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return item

    def all(self) -> list[Referral]:
        if not self.dir.is_dir():
            return []
        items = [
            Referral.model_validate_json(p.read_text(encoding="utf-8"))
            for p in self.dir.glob("*.json")
        ]
        return sorted(items, key=lambda r: r.created_at)

    def find(self, ident: str) -> Referral:
        """By id or a unique prefix of it."""
        matches = [r for r in self.all() if r.id.startswith(ident)]
        if not matches:
            raise ReferralError(f"no referral {ident!r} in {self.dir}")
        if len(matches) > 1:
            raise ReferralError(f"{ident!r} matches {len(matches)} referrals; give more of it")
        return matches[0]


def _audit(store: Path, node: str, event: str, item: Referral | None, **more: Any) -> None:
    record: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "event": event, "node": node}
    if item is not None:
        record |= {"referral": item.id, "digest": item.digest}
    AuditLog.for_store(store).append(record | more)


def patient_alias(store: Path, patient_id: str) -> str:
    """How the node's audit log names a child it could not refer (no key in the log)."""
    return pseudonym(pseudonym_key(store), f"referral\x1f{patient_id}")


# -- the steps ----------------------------------------------------------------------------------
def refer(store: Path, patient_id: str, question: str, client: HubClient) -> Referral:
    """Check consent, build the summary, pass it through the gate and hold it for release."""
    if not store.exists():
        raise ReferralError(f"{store}: no such node store")
    node = client.node_name()
    policy = load_policy(store)
    raw, keys, consent = build_case(store, node, patient_id)
    problem = care_use_problem(consent, policy.consent)
    if problem:
        alias = patient_alias(store, patient_id)
        _audit(store, node, "refer-refused", None, patient=alias, reason=problem)
        raise ConsentRefused(f"patient {patient_id!r} cannot be referred: {problem}")
    checked = release_case(raw, keys)
    summary = checked.summary.model_dump(mode="json", by_alias=True)
    item = Referral(
        id="ref-" + secrets.token_hex(8),
        patient_id=patient_id,
        question=question,
        summary=summary,
        withheld=checked.withheld,
        digest=case_digest(summary, question),
        created_at=datetime.now(UTC),
    )
    ReferralStore(store).save(item)
    _audit(store, node, "refer-held", item, withheld=len(checked.withheld))
    return item


def release(store: Path, ident: str, client: HubClient) -> Referral:
    """The custodian releases a held referral: it goes to the hub now."""
    rs = ReferralStore(store)
    item = rs.find(ident)
    if item.state != "held":
        raise ReferralError(f"referral {item.id} is {item.state}, not held")
    node = client.node_name()
    got = client.refer(item.id, item.summary, item.question)
    if got.get("digest") != item.digest:
        raise ReferralError(f"the hub's record of {item.id} does not match what was sent")
    item.state, item.hub_id, item.released_at = "sent", got["id"], datetime.now(UTC)
    rs.save(item)
    _audit(store, node, "referral-released", item, hub_id=item.hub_id)
    return item


def withdraw(store: Path, ident: str, reason: str) -> Referral:
    """The custodian (or the treating team) withdraws a held referral: it never leaves."""
    rs = ReferralStore(store)
    item = rs.find(ident)
    if item.state != "held":
        raise ReferralError(f"referral {item.id} is {item.state}; only a held one is withdrawn")
    item.state, item.withdrawn_reason = "withdrawn", reason
    rs.save(item)
    _audit(store, load_policy(store).name or store.stem, "referral-withdrawn", item)
    return item


def fetch(store: Path, client: HubClient) -> list[Referral]:
    """Ask the hub for the board's recommendations on this node's referrals and keep each new
    one in its referral file (and the audit log)."""
    node = client.node_name()
    rs = ReferralStore(store)
    mine = {r.id: r for r in rs.all()}
    changed = []
    for remote in client.node_referrals():
        item = mine.get(remote.get("node_ref", ""))
        if item is None or remote.get("recommendation") is None or item.state == "answered":
            continue
        item.state = "answered"
        item.recommendation = remote["recommendation"]
        item.recommended_by = remote.get("recommended_by")
        item.recommended_at = remote.get("recommended_at")
        rs.save(item)
        _audit(store, node, "recommendation-received", item, hub_id=remote.get("id"))
        changed.append(item)
    return changed

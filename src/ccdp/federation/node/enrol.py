"""Randomising a node's own patient (`ccdp node randomise`): the strata from the node's store, a
trial-specific pseudonym to the hub, the arm back into the store's `trial_enrolment` table and the
node's audit log (docs/randomisation.md).

Only trials the node's custodian accepted (the node policy's `trials`) randomise here. What leaves
the node: the pseudonym (HMAC of the patient key and the trial's name under the
node's pseudonym key, so the hub cannot link a patient across trials or nodes) and the patient's
value of each of the trial's strata. Nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from ccdp.cohort.view import cohort_sql
from ccdp.disclosure.policy import load_policy
from ccdp.disclosure.refusals import Refusal
from ccdp.disclosure.strata import check_strata, release_strata
from ccdp.errors import CcdpError
from ccdp.federation.client import HubClient
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.local import connect_store
from ccdp.ingest.pseudonym import pseudonym
from ccdp.store.config import pseudonym_key
from ccdp.store.node_store import NodeStore

# strata whose value is recorded as the enrolment's `risk_group`, first found wins
RISK_STRATA = ("relapse_risk", "bfm_strategic_group", "risk_group")


class EnrolmentError(CcdpError):
    """The patient cannot be randomised from this store (unknown, ambiguous or missing strata,
    or the store already holds another arm)."""


@dataclass(frozen=True)
class Enrolled:
    trial: str
    patient_id: str
    pseudonym: str
    arm: str
    strata: dict[str, str]
    repeated: bool

    def to_json(self) -> dict[str, Any]:
        """What the command prints: the trial, the patient (as the node knows it), arm, strata."""
        return {
            "trial": self.trial,
            "patient": self.patient_id,
            "arm": self.arm,
            "strata": self.strata,
            "pseudonym": self.pseudonym,
            "repeated": self.repeated,
        }


def trial_pseudonym(store: Path, trial: str, patient_id: str) -> str:
    """The patient's pseudonym for one trial (stable: asking again sends the same one)."""
    return pseudonym(pseudonym_key(store), f"trial\x1f{trial}\x1f{patient_id}")


def patient_strata(store: Path, node: str, patient_id: str, strata: list[str]) -> dict[str, str]:
    """The patient's value of each stratum from the analysis view. A patient with several
    tumours must have one value per stratum over them; a missing value refuses (a stratum is
    never guessed)."""
    con = connect_store(store)
    try:
        sql = cohort_sql(["patient_id", *strata], "v.patient_id = ?")
        rows = con.execute(sql, [node, patient_id]).fetchall()
    except duckdb.Error as exc:
        raise EnrolmentError(f"{store}: the store cannot be read ({type(exc).__name__})") from None
    finally:
        con.close()
    if not rows:
        raise EnrolmentError(f"no patient {patient_id!r} with a tumour in {store}")
    out: dict[str, str] = {}
    for i, name in enumerate(strata, start=1):
        values = {r[i] for r in rows}
        if None in values:
            raise EnrolmentError(
                f"patient {patient_id!r}: {name} is unknown in the store; it cannot be "
                "randomised in a trial stratified by it until it is recorded"
            )
        if len(values) > 1:
            raise EnrolmentError(
                f"patient {patient_id!r}: {name} differs between the patient's tumours "
                f"({', '.join(sorted(map(str, values)))})"
            )
        out[name] = str(values.pop())
    return out


def _write(store: Path, trial: str, patient_id: str, arm: str, risk: str | None) -> None:
    """The enrolment row, in one transaction; an existing row must hold the same arm."""
    with NodeStore(store) as ns, ns.transaction() as con:
        held = con.execute(
            "SELECT arm FROM trial_enrolment WHERE patient_id = ? AND trial = ?",
            [patient_id, trial],
        ).fetchall()
        if held:
            if held[0][0] != arm:
                raise EnrolmentError(
                    f"the store holds arm {held[0][0]!r} for patient {patient_id!r} in trial "
                    f"{trial!r} but the hub allocated {arm!r}: resolve with the trial office"
                )
            return
        con.execute(
            "INSERT INTO trial_enrolment (patient_id, trial, arm, enrolment_date, risk_group) "
            "VALUES (?, ?, ?, ?, ?)",
            [patient_id, trial, arm, date.today(), risk],
        )


def randomise(store: Path, trial: str, patient_id: str, client: HubClient) -> Enrolled:
    """Randomise `patient_id` of `store` in `trial` at the hub `client` talks to (node token);
    write the arm into the store and the audit log."""
    if not store.exists():
        raise EnrolmentError(f"{store}: no such node store")
    node = client.node_name()
    alias = trial_pseudonym(store, trial, patient_id)
    try:
        if trial not in load_policy(store).trials:  # the custodian's consent, before any read
            raise Refusal("trial_not_accepted", trial[:80])
        spec = client.trial(trial)
        check_strata(list(spec["strata"]))
        strata = release_strata(patient_strata(store, node, patient_id, list(spec["strata"])))
    except Refusal as exc:
        record = {"event": "randomise-refused", "node": node, "trial": trial, "patient": alias}
        AuditLog.for_store(store).append(record | {"rule": exc.rule, "term": exc.term})
        raise
    got = client.randomise(trial, alias, strata)
    if got.get("patient") != alias or got.get("arm") not in spec["arms"]:
        raise EnrolmentError(f"the hub's answer does not fit the request: {got}")
    risk = next((got["strata"][s] for s in RISK_STRATA if s in got["strata"]), None)
    _write(store, trial, patient_id, got["arm"], risk)
    AuditLog.for_store(store).append(
        {
            "time": got.get("allocated_at"),
            "event": "randomise",
            "node": node,
            "trial": trial,
            "patient": alias,
            "strata": got["strata"],
            "status": "repeated" if got.get("repeated") else "allocated",
            "arm": got["arm"],
        }
    )
    return Enrolled(
        trial, patient_id, alias, got["arm"], dict(got["strata"]), bool(got["repeated"])
    )

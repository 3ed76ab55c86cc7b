"""Trials at the hub: the admin creates one, a treating centre's node randomises its own patient,
the trial's statistician reads the allocations (docs/randomisation.md).

Concealment: no route shows a trial's seed, its allocation list or the counts per arm to anyone
but a statistician of that trial (role `statistician`, narrowed by the trial's `statisticians`
list when it has one). A node sees the arms of its own patients only, once allocated.
Irreversibility: one allocation per trial, node and patient pseudonym; asking again returns it.
Every allocation is chained into the hub's audit log with a digest binding patient, strata and
arm (so the log, which an admin reads, does not reveal the arm, yet an altered allocation no
longer matches it).

A feature: it works through the hub's context (context.py), never the core, and `router`
builds its routes for app.py to put on the hub's app.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ccdp.clinical.randomisation import (
    Marginals,
    TrialSpec,
    block_arm,
    load_trial,
    minimisation_arm,
    new_seed,
    stratum_key,
)
from ccdp.cohort.view import declared_levels
from ccdp.federation.hub.context import (
    Conflict,
    Forbidden,
    HubContext,
    HubError,
    NotFound,
    Principal,
)
from ccdp.federation.hub.doors import AsAdmin, AsAnyone, AsNode, AsUser, Strict
from ccdp.federation.hub.models import AllocationRow, NodeRow, TrialRow
from ccdp.specfile import first_error

PATIENT = r"^[A-Za-z0-9_.:-]{1,100}$"


def allocation_digest(trial: str, seq: int, patient: str, strata: dict[str, str], arm: str) -> str:
    """What the audit record binds: sha256 of the allocation's canonical JSON."""
    body = {"trial": trial, "seq": seq, "patient": patient, "strata": strata, "arm": arm}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Trials:
    """Trials and allocations over the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _row(s: Session, name: str) -> TrialRow:
        row = s.scalars(select(TrialRow).where(TrialRow.name == name)).first()
        if row is None:
            raise NotFound(f"no trial {name!r}")
        return row

    @staticmethod
    def _spec(row: TrialRow) -> TrialSpec:
        """The stored spec, checked again (a view variable it stratifies by may have gone)."""
        try:
            return TrialSpec.model_validate(row.spec)
        except ValidationError as exc:
            raise Conflict(
                f"trial {row.name!r} no longer validates ({first_error(exc)}): "
                "randomisation is stopped until the trial office resolves it"
            ) from None

    @staticmethod
    def is_statistician(row: TrialRow, who: Principal) -> bool:
        if who.kind != "user" or who.role != "statistician":
            return False
        named = row.spec.get("statisticians") or []
        return not named or who.name in named

    @staticmethod
    def _public(row: TrialRow) -> dict[str, Any]:
        spec = row.spec
        return {
            "name": row.name,
            "arms": spec["arms"],
            "ratio": spec["ratio"],
            "strata": spec["strata"],
            "method": spec["method"],
            "randomised": row.allocated,
            "created_at": row.created_at.isoformat(),
        }

    # -- admin ----------------------------------------------------------------------------
    def create(self, admin: Principal, raw: dict[str, Any]) -> dict[str, Any]:
        spec = load_trial(raw)
        row = TrialRow(
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            seed=new_seed(),
            allocated=0,
            created_by=admin.name,
        )
        with self.context.sessions() as s:
            if s.scalars(select(TrialRow.id).where(TrialRow.name == spec.name)).first():
                raise Conflict(f"a trial named {spec.name!r} exists")
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"a trial named {spec.name!r} exists") from None
            self.context.audit(
                s,
                admin.name,
                "trial-created",
                trial=spec.name,
                method=spec.method,
                arms=spec.arms,
                ratio=spec.ratio,
                strata=spec.strata,
            )
            s.commit()
            return self._public(row)

    # -- anyone with a token --------------------------------------------------------------
    def all(self) -> list[dict[str, Any]]:
        with self.context.sessions() as s:
            return [self._public(r) for r in s.scalars(select(TrialRow).order_by(TrialRow.name))]

    def show(self, name: str) -> dict[str, Any]:
        with self.context.sessions() as s:
            return self._public(self._row(s, name))

    # -- the node -------------------------------------------------------------------------
    def _check_strata(self, spec: TrialSpec, strata: dict[str, str]) -> None:
        want, got = set(spec.strata), set(strata)
        if want != got:
            missing = ", ".join(sorted(want - got)) or "none"
            extra = ", ".join(sorted(got - want)) or "none"
            raise HubError(
                f"trial {spec.name!r} stratifies by {', '.join(spec.strata) or 'nothing'}; "
                f"missing: {missing}; not of this trial: {extra}"
            )
        for name, value in strata.items():
            levels = declared_levels(name)
            if not value or (levels is not None and value not in levels):
                raise HubError(f"stratum {name}: {value[:40]!r} is not one of its levels")

    @staticmethod
    def _answer(row: TrialRow, a: AllocationRow, repeated: bool) -> dict[str, Any]:
        return {
            "trial": row.name,
            "patient": a.patient,
            "arm": a.arm,
            "strata": a.strata,
            "allocated_at": a.allocated_at.isoformat(),
            "repeated": repeated,
        }

    @staticmethod
    def _held(s: Session, row: TrialRow, node_id: int, patient: str) -> AllocationRow | None:
        return s.scalars(
            select(AllocationRow).where(
                AllocationRow.trial_id == row.id,
                AllocationRow.node_id == node_id,
                AllocationRow.patient == patient,
            )
        ).first()

    def randomise(
        self, node: Principal, name: str, patient: str, strata: dict[str, str]
    ) -> dict[str, Any]:
        """The arm of `patient` (a pseudonym of `node`'s); a second request returns the first
        allocation unchanged (with the strata it was made with), whatever strata it sends."""
        with self.context.sessions() as s:
            row = self._row(s, name)
            held = self._held(s, row, node.id, patient)
            if held is not None:
                self.context.audit(s, node.name, "randomise-repeat", trial=name, seq=held.seq)
                s.commit()
                return self._answer(row, held, True)
            spec = self._spec(row)
            self._check_strata(spec, strata)
            strata = {k: strata[k] for k in spec.strata}
            # the counter first: the write lock (SQLite) or row lock (PostgreSQL) that orders
            # allocations; then look again (another request may have allocated this patient)
            s.execute(
                update(TrialRow)
                .where(TrialRow.id == row.id)
                .values(allocated=TrialRow.allocated + 1)
            )
            s.refresh(row)
            held = self._held(s, row, node.id, patient)
            if held is not None:
                s.rollback()
                return self.randomise(node, name, patient, strata)
            seq = row.allocated - 1
            key = stratum_key(spec, strata)
            if spec.method == "blocks":
                n = s.scalar(
                    select(func.count())
                    .select_from(AllocationRow)
                    .where(AllocationRow.trial_id == row.id, AllocationRow.stratum == key)
                )
                arm = spec.arms[block_arm(spec, row.seed, key, int(n or 0))]
            else:
                marginals = Marginals.empty()
                for prior_strata, prior_arm in s.execute(
                    select(AllocationRow.strata, AllocationRow.arm).where(
                        AllocationRow.trial_id == row.id
                    )
                ):
                    marginals.add(prior_strata, spec.arms.index(prior_arm), len(spec.arms))
                arm = spec.arms[minimisation_arm(spec, row.seed, seq, strata, marginals)]
            alloc = AllocationRow(
                trial_id=row.id,
                seq=seq,
                node_id=node.id,
                patient=patient,
                strata=strata,
                stratum=key,
                arm=arm,
            )
            s.add(alloc)
            self.context.audit(
                s,
                node.name,
                "randomised",
                trial=name,
                seq=seq,
                digest=allocation_digest(name, seq, patient, strata, arm),
            )
            try:
                s.commit()
            except IntegrityError:  # the same patient allocated at the same moment: theirs
                s.rollback()
                return self.randomise(node, name, patient, strata)
            return self._answer(row, alloc, False)

    def node_allocations(self, node: Principal, name: str) -> list[dict[str, Any]]:
        """The arms of this node's own patients in a trial (never another node's)."""
        with self.context.sessions() as s:
            row = self._row(s, name)
            rows = s.scalars(
                select(AllocationRow)
                .where(AllocationRow.trial_id == row.id, AllocationRow.node_id == node.id)
                .order_by(AllocationRow.seq)
            )
            return [self._answer(row, a, False) | {"repeated": None} for a in rows]

    # -- the statistician -----------------------------------------------------------------
    def allocations(self, who: Principal, name: str) -> dict[str, Any]:
        """The whole list, the seed and the counts per arm (statistician of the trial only);
        reading it is audited."""
        with self.context.sessions() as s:
            row = self._row(s, name)
            if not self.is_statistician(row, who):
                self.context.audit(s, who.name, "allocations-refused", trial=name, role=who.role)
                s.commit()
                raise Forbidden(f"only a statistician of trial {name!r} sees its allocations")
            listed = [
                {
                    "seq": a.seq,
                    "node": node_name,
                    "patient": a.patient,
                    "strata": a.strata,
                    "stratum": a.stratum,
                    "arm": a.arm,
                    "allocated_at": a.allocated_at.isoformat(),
                }
                for a, node_name in s.execute(
                    select(AllocationRow, NodeRow.name)
                    .join(NodeRow, AllocationRow.node_id == NodeRow.id)
                    .where(AllocationRow.trial_id == row.id)
                    .order_by(AllocationRow.seq)
                )
            ]
            counts = {arm: 0 for arm in row.spec["arms"]}
            for a in listed:
                counts[a["arm"]] += 1
            self.context.audit(s, who.name, "allocations-read", trial=name, n=len(listed))
            s.commit()
            return {
                **self._public(row),
                "spec": row.spec,
                "seed": row.seed,
                "counts": counts,
                "allocations": listed,
            }


class CreateTrial(Strict):
    spec: dict[str, Any]


class RandomiseBody(Strict):
    patient: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The patient's pseudonym at the node (never a name or record number)",
    )
    strata: dict[str, Annotated[str, Field(max_length=100)]] = Field(
        default_factory=dict, max_length=6, description="The patient's value of each stratum"
    )


class Allocation(Strict):
    trial: str
    patient: str
    arm: str
    strata: dict[str, str]
    allocated_at: str
    repeated: bool | None = None


def router(trials: Callable[[], Trials], api: APIRouter | None = None) -> APIRouter:
    """The trial routes (docs/randomisation.md); `trials` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.post("/api/trials", tags=["trials"], status_code=201)
    def create_trial(body: CreateTrial, admin: AsAdmin) -> dict[str, Any]:
        """Create a trial (admin): arms, ratio, strata, method; the hub draws its secret seed."""
        return trials().create(admin, body.spec)

    @api.get("/api/trials", tags=["trials"])
    def list_trials(_user: AsUser) -> list[dict[str, Any]]:
        """Trials: name, arms, ratio, strata, method and how many were randomised (never the
        counts per arm, the list or the seed: see the allocations route)."""
        return trials().all()

    @api.get("/api/trials/{name}", tags=["trials"])
    def show_trial(name: str, _who: AsAnyone) -> dict[str, Any]:
        """One trial's public description (users and nodes)."""
        return trials().show(name)

    @api.get("/api/trials/{name}/allocations", tags=["trials"])
    def trial_allocations(name: str, who: AsUser) -> dict[str, Any]:
        """The allocation list, counts per arm and the seed: the trial's statistician only."""
        return trials().allocations(who, name)

    @api.post("/api/node/trials/{name}/randomise", tags=["node"])
    def node_randomise(name: str, body: RandomiseBody, node: AsNode) -> Allocation:
        """Randomise this node's patient (pseudonym and strata only); asking again for the same
        patient returns the same arm."""
        return Allocation(**trials().randomise(node, name, body.patient, body.strata))

    @api.get("/api/node/trials/{name}/allocations", tags=["node"])
    def node_allocations(name: str, node: AsNode) -> list[Allocation]:
        """The arms of this node's own patients in a trial."""
        return [Allocation(**a) for a in trials().node_allocations(node, name)]

    return api

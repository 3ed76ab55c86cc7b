"""A node answering tasks on its own store: policy, cohort view, analysis, disclosure, audit.

The same code answers in-process (`ccdp run`, tests, notebooks) and behind the networked node
agent, so what a node releases never depends on how the question arrived.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ccdp.analyses import registry
from ccdp.analyses.base import Analysis, AnalysisParams
from ccdp.analyses.node_data import make_records
from ccdp.cohort.feasibility import FEASIBILITY_ANALYSES, FeasibilityError, check_feasibility_study
from ccdp.cohort.spec import CohortSpec
from ccdp.cohort.view import Rows, cohort_sql, view_columns
from ccdp.disclosure.consent_note import release_excluded
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import record, release
from ccdp.disclosure.ledger import Ledger, as_set, ledger_path
from ccdp.disclosure.policy import NodePolicy
from ccdp.disclosure.refusals import Refusal, public_reason, too_few
from ccdp.errors import CcdpError
from ccdp.federation.node.audit import AuditLog, audit_path
from ccdp.federation.node.policy import load_policy
from ccdp.governance.consent import ConsentMode, consent_filter
from ccdp.wire.data_use import DataUse
from ccdp.wire.errors import InsufficientData
from ccdp.wire.protocol import Answer, AuditHead, Task, utcnow
from ccdp.wire.records import Records, Unit, ledger_keys, specimen_keys
from ccdp.wire.summary import Summary

MAX_CACHED_STUDIES = 8

logger = logging.getLogger(__name__)


class NodeError(CcdpError):
    """The node cannot open its store or answer at all."""


def connect_store(store: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the store attached read-only as `store` (the node never writes)."""
    con = duckdb.connect()
    quoted = str(store).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS store (READ_ONLY)")
    return con


# Cohort variables that are also dimensions of the population table: a cohort restricted on
# them restricts the denominators too (other conditions, e.g. iccc_group, restrict cases only).
POPULATION_VARIABLES = ("country", "sex", "diagnosis_year", "diagnosis_period", "age_group")

POPULATION_SQL = """
SELECT country, year, sex, age_group, population FROM (
    SELECT *, year AS diagnosis_year,
        ((year // 5) * 5)::VARCHAR || '-' || ((year // 5) * 5 + 4)::VARCHAR AS diagnosis_period
    FROM store.population) AS v
WHERE {where}
"""


# Node-only columns read with every cohort: the keys of the disclosure ledger.
KEY_COLUMNS = ("patient_id", "tumour_id", "tumour_seq")


@dataclass
class StoreData:
    """NodeData over a node store: the cohort's view rows, read once per study."""

    node: str
    frame: pd.DataFrame
    store: Path
    cohort: CohortSpec = field(default_factory=CohortSpec)
    context: DisclosureContext = field(default_factory=DisclosureContext)
    _keys: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.frame if columns is None else self.frame[columns]

    @property
    def disclosure(self) -> DisclosureContext:
        return self.context

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        """Ledger keys of the rows at `index` (computed once per study and unit)."""
        if unit not in self._keys:
            f = self.frame
            if unit == "specimens":
                self._keys[unit] = specimen_keys(f["specimen_id"])
            else:
                first = f["tumour_seq"] == 1
                self._keys[unit] = ledger_keys(f["patient_id"], f["tumour_id"], first, unit)
        positions = self.frame.index.get_indexer(index)
        return self._keys[unit][positions]

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        return make_records(self, index, row, unit)

    def population(self) -> pd.DataFrame:
        """The population table, restricted as the cohort restricts country/sex/year/age."""
        keep = {k: v for k, v in self.cohort.root.items() if k in POPULATION_VARIABLES}
        where, params = CohortSpec.model_validate(keep).compile()
        con = connect_store(self.store)
        try:
            return con.execute(POPULATION_SQL.format(where=where), params).df()
        finally:
            con.close()


@dataclass
class _Study:
    """What the node keeps for one study across its rounds."""

    key: str
    data: StoreData
    cache: dict[str, Any] = field(default_factory=dict)
    excluded: np.ndarray | None = None  # ledger keys of the patients consent excluded


class LocalNode:
    """A node over one store. `answer(task)` never raises: failures become `failed` answers."""

    def __init__(
        self,
        store_path: Path | str,
        name: str | None = None,
        policy: NodePolicy | None = None,
        from_hub: bool = False,
    ) -> None:
        """`from_hub`: tasks come from a hub (`ccdp node run|answer`), which the node does not
        trust to have checked the project: one naming none is refused under `require_project`.
        The operator's own `ccdp run` on this machine is not a hub's task."""
        self.store = Path(store_path)
        self.from_hub = from_hub
        if not self.store.exists():
            raise NodeError(f"{self.store}: no such node store")
        self._fixed_policy = policy
        self.name = name or self.policy.name or self.store.stem
        self.audit = AuditLog(audit_path(self.store))
        self.ledger = Ledger(ledger_path(self.store))
        self._studies: OrderedDict[str, _Study] = OrderedDict()
        self._detector: ThreadPoolExecutor | None = None
        self._detections: list[Future[None]] = []

    @property
    def policy(self) -> NodePolicy:
        """The policy file is re-read for every task, so an operator's change applies at once."""
        return self._fixed_policy or load_policy(self.store)

    # -- answering ----------------------------------------------------------------------------
    def answer(self, task: Task) -> Answer:
        """Run one round of a task; log and return the answer, whatever happens.

        What leaves is decided by the disclosure gate: the released summary, or a refusal or
        error saying only what `public_reason` allows; the node's log keeps the full detail."""
        progress = {"data_read": False}
        detail = None
        try:
            summary, notes = self._answer(task, progress)
            answer = Answer(
                task_id=task.task_id,
                node=self.name,
                status="answered",
                reason="; ".join(notes) or None,
                summary=summary.to_dict(),
            )
        except Exception as exc:  # every failure becomes an answer; none leaks a stored value
            status, reason = public_reason(exc, self.name, progress["data_read"])
            detail = f"{type(exc).__name__}: {exc}"
            answer = self._not_answered(task, status, reason)
        head = self._log(task, answer, detail)
        # after logging: the head the hub is sent names this very answer's record
        return answer.model_copy(update={"audit_head": head})

    def _not_answered(self, task: Task, status: str, reason: str) -> Answer:
        return Answer(task_id=task.task_id, node=self.name, status=status, reason=reason)

    def _answer(self, task: Task, progress: dict[str, bool]) -> tuple[Summary, list[str]]:
        """Check the request, then (and only then) read the data, run and pass the gate."""
        policy = self.policy
        analysis, params, cohort = self._request(task, policy)
        progress["data_read"] = True
        context = DisclosureContext(policy, self.ledger)
        study = self._study(task, analysis, params, cohort, context)
        try:
            summary = analysis.local(study.data, params, task.request, study.cache)
        except InsufficientData:
            # no usable rows: answered as a cohort too small, never as "none here" (TOO_FEW)
            raise too_few(context) from None
        checked = release(summary, context)
        if study.excluded is not None:  # a project's data use: say how many consent excluded
            note, sets = release_excluded(study.excluded, context)
            checked.notes.append(note)
            checked.sets.extend(sets)
        before = len(self.ledger)
        meta = {"study_id": task.study_id, "round": task.round, "project": task.project}
        record(checked, context, meta)
        if task.project is not None and len(self.ledger) > before:
            self._after_release(task.project, task.study_id, policy.min_cell)
        return checked.summary, checked.notes

    def _after_release(self, project: str, study_id: str, min_cell: int) -> None:
        """Detection (federation/node/acceptance.py): after a release that added sets to the
        ledger, look for isolating combinations across the project's releases, in a background
        worker with its own ledger connection, so the answer never waits for it."""
        if self._detector is None:
            self._detector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccdp-detect")
        self._detections.append(
            self._detector.submit(_detect_quietly, self.store, project, study_id, min_cell)
        )

    def wait_detection(self) -> None:
        """Block until every detection started so far has finished (tests, `ccdp run`)."""
        while self._detections:
            self._detections.pop(0).result()

    def _request(
        self, task: Task, policy: NodePolicy
    ) -> tuple[Analysis, AnalysisParams, CohortSpec]:
        """Every check made before any data is read: project, policy, parameters, cohort."""
        self._check_project(task, policy)
        if policy.allowed_analyses is not None and task.analysis not in policy.allowed_analyses:
            raise Refusal("allowed_analyses", task.analysis)
        analysis = registry.get(task.analysis)
        params = analysis.params_model.model_validate(task.params)
        cohort = CohortSpec.load(task.cohort)
        analysis.check_request(params, set(cohort.root))
        self._check_feasibility(task, params, policy)
        return analysis, params, cohort

    @staticmethod
    def _check_feasibility(task: Task, params: AnalysisParams, policy: NodePolicy) -> None:
        """Under `counts: perturbed` a count asks only declared levels, bands and groupings
        (cohort/feasibility.py): noise alone falls to averaging over fresh day-level windows or
        level lists, so those are refused before any data is read, naming the rule."""
        if policy.counts != "perturbed" or task.analysis not in FEASIBILITY_ANALYSES:
            return
        try:
            check_feasibility_study(task.analysis, task.cohort, getattr(params, "by", []))
        except FeasibilityError as exc:
            raise Refusal("feasibility", str(exc)) from None

    def review(self, task: Task) -> str | None:
        """Why this hub task's answer must wait for the custodian (policy `exact_release`), or
        None: answered as it comes. A task the node refuses before reading any data (no
        project, not accepted, outside its terms or policy, invalid) is refused as always.
        Asked by the node agent (`review`) for every hub task, and by `ccdp node answer` for an
        offline one, before the task is answered; the operator's own `ccdp run` asks a
        LocalNode directly and is never held."""
        from ccdp.federation.node.projects import load_decisions, review_reason

        policy = self.policy
        if policy.exact_release == "any":
            return None
        try:
            self._request(task, policy)
        except Exception:  # answered before any data is read, as always (`answer` says how)
            return None
        return review_reason(task, load_decisions(self.store), policy.exact_release)

    def _check_project(self, task: Task, policy: NodePolicy) -> None:
        """The node's own governance check (its custodian's record, not the hub's word)."""
        from ccdp.federation.node.projects import check_task, load_decisions

        if task.project is None:
            if self.from_hub and policy.require_project:
                raise Refusal("no_project")
            return
        check_task(task, self.name, load_decisions(self.store), utcnow().date())

    def _study(
        self,
        task: Task,
        analysis: Analysis,
        params: AnalysisParams,
        cohort: CohortSpec,
        context: DisclosureContext,
    ) -> _Study:
        """The study's cohort rows, read from the store on its first round only."""
        columns = analysis.columns(params)
        rows = analysis.view_rows(params)
        use, mode = task.data_use, context.policy.consent
        used = use.model_dump(mode="json") if use is not None else None
        key = json.dumps(
            [cohort.to_json(), columns, rows, task.analysis, used, mode],
            sort_keys=True,
            default=str,
        )
        study = self._studies.get(task.study_id)
        if study is None or study.key != key:
            frame = self._read(columns, cohort, use, mode, rows=rows)
            study = _Study(key=key, data=StoreData(self.name, frame, self.store, cohort))
            if use is not None:
                study.excluded = self._excluded(cohort, use, mode, rows)
            self._studies[task.study_id] = study
            while len(self._studies) > MAX_CACHED_STUDIES:
                self._studies.popitem(last=False)
        self._studies.move_to_end(task.study_id)
        study.data.context = context  # the policy in force for this round
        return study

    def read_view(
        self,
        columns: list[str] | None,
        cohort: CohortSpec,
        data_use: DataUse | None = None,
        mode: ConsentMode = "required",
    ) -> pd.DataFrame:
        """The cohort's view rows (node-side only: used by analyses and the operator), only the
        patients whose consent permits `data_use` when one is given."""
        return self._read(columns, cohort, data_use, mode)

    def _read(
        self,
        columns: list[str] | None,
        cohort: CohortSpec,
        data_use: DataUse | None = None,
        mode: ConsentMode = "required",
        permitted: bool = True,
        rows: Rows = "tumours",
    ) -> pd.DataFrame:
        """View rows of the cohort (tumours, or their available specimens); with a data use,
        those whose consent permits it (or, with `permitted=False`, those it excludes)."""
        cols = view_columns(rows) if columns is None else list(columns)
        keys = [*KEY_COLUMNS, "specimen_id"] if rows == "specimens" else KEY_COLUMNS
        cols += [c for c in keys if c not in cols]
        where, params = cohort.compile()
        con = connect_store(self.store)
        try:
            if data_use is not None:
                distinct = con.execute("SELECT DISTINCT consent FROM store.patient").fetchall()
                ok, more = consent_filter((r[0] for r in distinct), data_use, mode)
                test = "IN" if permitted else "NOT IN"
                where = (
                    f"({where}) AND v.patient_id {test} "
                    f"(SELECT patient_id FROM store.patient WHERE {ok})"
                )
                params = [*params, *more]
            return con.execute(cohort_sql(cols, where, rows=rows), [self.name, *params]).df()
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.name}: the store cannot be read ({kind})") from None
        finally:
            con.close()

    def _excluded(
        self, cohort: CohortSpec, use: DataUse, mode: ConsentMode, of: Rows = "tumours"
    ) -> np.ndarray:
        """Ledger keys (patient unit) of the cohort's patients that consent excludes from `use`
        (of the cohort's rows `of`, since a specimen cohort may filter on specimen variables):
        released only through the gate, as a count cell is."""
        rows = self._read(["patient_id"], cohort, use, mode, permitted=False, rows=of)
        keys = ledger_keys(
            rows["patient_id"], rows["tumour_id"], rows["tumour_seq"] == 1, "patients"
        )
        return as_set(keys)

    def _log(self, task: Task, answer: Answer, detail: str | None = None) -> AuditHead:
        """Record the answer (and, node-side only, the full detail of a failure) in the keyed
        audit log; return the log's new head."""
        record = self.audit.append(
            {
                "time": answer.sent_at.isoformat(),
                "node": self.name,
                "task_id": task.task_id,
                "study_id": task.study_id,
                "round": task.round,
                "analysis": task.analysis,
                "project": task.project,
                "params": task.params,
                "cohort": task.cohort,
                "data_use": task.data_use.model_dump(mode="json") if task.data_use else None,
                "status": answer.status,
                "reason": answer.reason,
                "detail": detail,
                "summary": answer.summary,
            }
        )
        return AuditHead(seq=record["seq"], hash=record["hash"])


def _detect_quietly(store: Path, project: str, study_id: str, min_cell: int) -> None:
    """Run detection; a failure is logged for the operator and never reaches an answer."""
    from ccdp.federation.node.detection import detect

    ledger = Ledger(ledger_path(store))
    try:
        detect(store, ledger, project, study_id, min_cell)
    except Exception:  # detection is advisory: it must never break answering
        logger.exception("disclosure detection failed for project %s", project)
    finally:
        ledger.close()

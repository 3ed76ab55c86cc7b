"""A node answering tasks on its own store: policy, cohort view, analysis, disclosure, audit.

The same code answers in-process (`ccdp run`, tests, notebooks) and behind the networked node
agent, so what a node releases never depends on how the question arrived.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection
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
from ccdp.cohort.view import (
    Rows,
    cohort_sql,
    followup_missing_sql,
    set_aside_sql,
    specimen_only,
    view_columns,
    view_variables,
)
from ccdp.disclosure.consent_note import FOLLOWUP_HEAD, SET_ASIDE_HEAD, release_excluded
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import record, release
from ccdp.disclosure.ledger import Ledger, as_set, ledger_path
from ccdp.disclosure.perturb import KEY_SPACE
from ccdp.disclosure.perturb import record_keys as salted_keys
from ccdp.disclosure.policy import NodePolicy
from ccdp.disclosure.refusals import Refusal, public_reason, too_few
from ccdp.errors import CcdpError
from ccdp.federation.node.audit import AuditLog, audit_path
from ccdp.federation.node.policy import load_policy
from ccdp.federation.node.projects import Decision
from ccdp.federation.node.snapshot import VIEW_TABLE, Snapshot, snapshot, view_text
from ccdp.governance.consent import ConsentMode, consent_filter
from ccdp.governance.registered import RegisteredStudyError, study_hash
from ccdp.store.memory import duckdb_config
from ccdp.wire.data_use import DataUse
from ccdp.wire.errors import InsufficientData
from ccdp.wire.protocol import Answer, AuditHead, Task, utcnow
from ccdp.wire.records import Records, Unit, ledger_keys, specimen_keys
from ccdp.wire.summary import Summary

MAX_CACHED_STUDIES = 8
# beside a local run's answer that a networked node would hold for its custodian (`review`)
LOCAL_REVIEW_NOTE = (
    "not a registered study: a networked node holds this answer for its custodian's review "
    "(exact_release: {}); register it in the project's protocol to have it answered at once"
)

logger = logging.getLogger(__name__)


def budget_path(store: Path | str) -> Path:
    """`<store stem>.budget.json`: per project, the studies whose feasibility tables this node
    answered without its custodian (policy `feasibility_budget`)."""
    store = Path(store)
    return store.with_name(f"{store.stem}.budget.json")


def spend_budget(store: Path | str, task: Task, budget: int | None) -> str | None:
    """Count this feasibility task against its project's budget at the node, or say why it waits
    for the custodian: the project already had `budget` tables here. The decision depends only
    on the number of earlier tables, never on the data; a study asked again (a later round, a
    re-sent task) is counted once."""
    path = budget_path(store)
    spent: dict[str, list[str]] = (
        json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    )
    project = str(task.project)
    studies = spent.setdefault(project, [])
    if task.study_id in studies:
        return None
    if budget is not None and len(studies) >= budget:
        return (
            f"feasibility budget: project {project} has had its {budget} feasibility "
            f"table{'s' if budget != 1 else ''} from this node (feasibility_budget: {budget})"
        )
    studies.append(task.study_id)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spent, indent=1), encoding="utf-8")
    tmp.replace(path)
    return None


class NodeError(CcdpError):
    """The node cannot open its store or answer at all."""


def connect_store(store: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the store attached read-only as `store` (the node never writes),
    its memory bounded and spilling beside the store (`store.memory`)."""
    con = duckdb.connect(config=duckdb_config(store))
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


# A cohort's rows as SQL over a connection with the store attached: (sql, parameters).
CohortQuery = Callable[[duckdb.DuckDBPyConnection, list[str]], tuple[str, list[Any]]]

# Key columns of the keyed view (`key_connection`), as the cell aggregates read them.
_KEYED = ("_pid", "_tkey", "_first", "_rk_t", "_rk_p", "_multi")


def _keyed_columns() -> list[str]:
    """The view columns the keyed view keeps: the identifiers and every categorical variable
    of tumour rows (all a feasibility count may filter or group on)."""
    cats = [
        n
        for n, v in view_variables().items()
        if v.var_class == "categorical" and v.rows == "tumours"
    ]
    return list(dict.fromkeys([*KEY_COLUMNS, *cats]))


def key_connection(store: Path, node: str, salt: int) -> duckdb.DuckDBPyConnection:
    """A cursor on the store's snapshot (`snapshot.snapshot`: the view's rows and the tables
    the node reads, as database `store`) with table `vk`, the keyed view: the analysis view's
    identifiers and categorical columns (`_keyed_columns`) with each tumour's keys: its patient
    key (`_pid`), tumour-unit ledger key (`_tkey`), whether it is its patient's first tumour
    (`_first`) or one of several (`_multi`), and the record keys (`_rk_t`, `_rk_p`:
    `disclosure.perturb.record_keys` with the node's salt) of its tumour-unit and patient keys.
    Built once per state of the store and salt, with its snapshot: the pandas hashing of every
    id is paid once per store, not per study. Node-side only."""
    snap = snapshot(store, node)
    with snap.lock:
        if snap.keyed_salt != salt:
            _build_keyed(snap.cursor(), salt)
            snap.keyed_salt = salt
    return snap.cursor()


def _build_keyed(con: duckdb.DuckDBPyConnection, salt: int) -> None:
    cols = ", ".join(f'"{c}"' for c in _keyed_columns())
    con.execute(f"CREATE OR REPLACE TEMP TABLE v AS SELECT {cols} FROM {VIEW_TABLE}")
    rows = con.execute("SELECT patient_id, tumour_id, tumour_seq FROM v").df()
    first = rows["tumour_seq"] == 1
    pkey = ledger_keys(rows["patient_id"], rows["tumour_id"], first, "patients")
    tkey = ledger_keys(rows["patient_id"], rows["tumour_id"], first, "tumours")
    tumours = rows.groupby("patient_id")["tumour_id"].transform("size").to_numpy()
    keys = pd.DataFrame(
        {
            "tumour_id": rows["tumour_id"],
            "_pid": pkey,
            "_tkey": tkey,
            "_first": first.to_numpy(dtype=bool),
            "_rk_t": salted_keys(tkey, salt).astype(np.int16),
            "_rk_p": salted_keys(pkey, salt).astype(np.int16),
            "_multi": tumours > 1,
        }
    )
    con.register("_keys", keys)
    con.execute(
        f"CREATE OR REPLACE TABLE vk AS SELECT v.*, {', '.join(f'k.{c}' for c in _KEYED)} "
        "FROM v JOIN _keys k ON k.tumour_id = v.tumour_id"
    )
    con.unregister("_keys")
    con.execute("DROP TABLE v")


def _keyed_sql(sql: str, cols: list[str]) -> str | None:
    """The cohort's SQL (`cohort_sql` of `cols`) over the keyed view instead of the view, with
    the key columns selected too; None when its text is not of the expected shape."""
    view = view_text()
    select = ", ".join(f'"{c}"' for c in cols)
    prefix = f"SELECT {select} FROM "
    if sql.count(view) != 1 or not sql.startswith(prefix):
        return None
    keys = ", ".join(f"v.{c}" for c in _KEYED)
    return f"SELECT {select}, {keys} FROM " + sql[len(prefix) :].replace(view, "vk")


def _cells_sql(by: list[str], unit: Unit) -> str:
    """Per cell of `by` over `r` (cohort rows with their keys): the count of `unit` and the
    cell key, as `Records.sets` / `owner_sets` and `perturb.cell_keys` define them.
    Tumours: a cell's set holds its tumours' keys, except that a patient whose first tumour is
    not in the cell has their smallest key there replaced by the patient key (`Records`), a
    correction only patients of several tumours need; patients: the distinct patients (a
    patient of one tumour is one row); specimens: the distinct samples are counted and the
    cell keyed by their distinct children."""
    cols = ", ".join(f'"{c}"' for c in by)
    sel = f"{cols}, " if by else ""
    group = f" GROUP BY {cols}" if by else ""
    by_pid = f" GROUP BY {sel}_pid"
    if unit == "tumours":
        fix = "CASE WHEN bool_or(_first) THEN 0 ELSE any_value(_rk_p) - arg_min(_rk_t, _tkey) END"
        parts = (
            f"SELECT {sel}count(*) AS n, sum(_rk_t) AS k FROM r{group} UNION ALL "
            f"SELECT {sel}0 AS n, sum(c) AS k FROM "
            f"(SELECT {sel}{fix} AS c FROM r WHERE _multi{by_pid}){group}"
        )
    elif unit == "patients":
        parts = (
            f"SELECT {sel}count(*) AS n, sum(_rk_p) AS k FROM r WHERE NOT _multi{group} "
            f"UNION ALL SELECT {sel}count(*) AS n, sum(k) AS k FROM "
            f"(SELECT {sel}any_value(_rk_p) AS k FROM r WHERE _multi{by_pid}){group}"
        )
    else:
        parts = (
            f"SELECT {sel}sum(n) AS n, sum(k) AS k FROM "
            f"(SELECT {sel}count(*) AS n, any_value(_rk_p) AS k FROM r{by_pid}){group}"
        )
    outer = (
        f"coalesce(sum(n), 0)::BIGINT AS n, coalesce(sum(k), 0)::BIGINT % {KEY_SPACE} AS cell_key"
    )
    return f"SELECT {sel}{outer} FROM ({parts}) AS u{group}"


def _over_view(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """A cohort's SQL over the snapshot's materialised view (`Snapshot.over_view`)."""
    fast = Snapshot.over_view(sql, params)
    if fast is None:  # cohort_sql embeds the view once, always: a change there must be seen
        raise NodeError("a cohort query does not embed the analysis view as cohort_sql does")
    return fast


@dataclass
class StoreData:
    """NodeData over a node store: the cohort's view rows, read once per study, when first
    asked for (`load`); under perturbed counts, cells counted in the store by one aggregate
    (`count_cells`, through `query`) without reading the rows at all."""

    node: str
    loaded: pd.DataFrame | None
    store: Path
    cohort: CohortSpec = field(default_factory=CohortSpec)
    context: DisclosureContext = field(default_factory=DisclosureContext)
    _keys: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    load: Callable[[], pd.DataFrame] | None = field(default=None, repr=False)
    query: CohortQuery | None = field(default=None, repr=False)

    @property
    def frame(self) -> pd.DataFrame:
        """The cohort's view rows (read from the store on first use)."""
        if self.loaded is None:
            if self.load is None:
                raise NodeError(f"node {self.node}: no view rows")
            self.loaded = self.load()
        return self.loaded

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

    def count_cells(
        self, groupings: list[list[str]], unit: Unit, salt: int
    ) -> list[pd.DataFrame] | None:
        """Each grouping's cells (columns, `n`, `cell_key`) from one read of the cohort's rows
        joined to the store's key table (`key_connection`); None without a cohort query."""
        if self.query is None:
            return None
        con = key_connection(self.store, self.node, salt)
        try:
            used = list(dict.fromkeys(c for by in groupings for c in by))
            cols = [*used, "tumour_id", *(["specimen_id"] if unit == "specimens" else [])]
            sql, params = self.query(con, cols)
            kept = set(_keyed_columns()) | set(specimen_only([*used, *self.cohort.root]))
            keyed = _keyed_sql(sql, cols)
            if keyed is None or not {*used, *self.cohort.root} <= kept:
                # a variable the keyed view does not keep: the view itself, joined to the keys
                keys = ", ".join(f"k.{c}" for c in _KEYED)
                sql, params = _over_view(sql, params)
                keyed = f"SELECT v.*, {keys} FROM ({sql}) AS v JOIN vk k USING (tumour_id)"
            else:
                params = params[1:]  # the node name, a parameter of the view's text only
            return [
                con.execute(f"WITH r AS ({keyed}) {_cells_sql(by, unit)}", params).df()
                for by in groupings
            ]
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.node}: the store cannot be read ({kind})") from None
        finally:
            con.close()

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        return make_records(self, index, row, unit)

    def population(self) -> pd.DataFrame:
        """The population table, restricted as the cohort restricts country/sex/year/age."""
        keep = {k: v for k, v in self.cohort.root.items() if k in POPULATION_VARIABLES}
        where, params = CohortSpec.model_validate(keep).compile()
        try:
            con = snapshot(self.store, self.node).cursor()
            return con.execute(POPULATION_SQL.format(where=where), params).df()
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.node}: the store cannot be read ({kind})") from None


@dataclass
class _Study:
    """What the node keeps for one study across its rounds."""

    key: str
    data: StoreData
    cache: dict[str, Any] = field(default_factory=dict)
    excluded: np.ndarray | None = None  # ledger keys of the patients consent excluded
    no_followup: np.ndarray | None = None  # those a survival analysis leaves out: no follow-up
    set_aside: np.ndarray | None = None  # linked duplicates left out (`dedup`): another node's


class LocalNode:
    """A node over one store. `answer(task)` never raises: failures become `failed` answers."""

    def __init__(
        self,
        store_path: Path | str,
        name: str | None = None,
        policy: NodePolicy | None = None,
        from_hub: bool = False,
        registered: Collection[str] = (),
    ) -> None:
        """`from_hub`: tasks come from a hub (`ccdp node run|answer`), which the node does not
        trust to have checked the project: one naming none is refused under `require_project`.
        The operator's own `ccdp run` on this machine is not a hub's task. `registered`: the
        hashes of studies the operator registers for a local run (`ccdp run --project FILE`),
        answered as a registered study of an accepted project is; never a hub's."""
        self.store = Path(store_path)
        self.from_hub = from_hub
        self.registered = frozenset() if from_hub else frozenset(registered)
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
        registered = self.is_registered(task)
        analysis, params, cohort = self._request(task, policy, registered)
        progress["data_read"] = True
        feasibility = task.analysis in FEASIBILITY_ANALYSES
        context = DisclosureContext(
            policy, self.ledger, registered=registered, feasibility=feasibility
        )
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
        if study.no_followup is not None:  # a survival analysis: say how many it left out
            note, sets = release_excluded(study.no_followup, context, FOLLOWUP_HEAD)
            checked.notes.append(note)
            checked.sets.extend(sets)
        if study.set_aside is not None:  # `dedup`: say how many linked duplicates it set aside
            note, sets = release_excluded(study.set_aside, context, SET_ASIDE_HEAD)
            checked.notes.append(note)
            checked.sets.extend(sets)
        if not self.from_hub and self._held_at_a_node(task, policy, registered):
            checked.notes.append(LOCAL_REVIEW_NOTE.format(policy.exact_release))
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

    def is_registered(self, task: Task, decisions: dict[str, Decision] | None = None) -> bool:
        """Is `task` a registered study: of a project this node's custodian accepted (its
        hash among those accepted), or one the operator registers for a local run?
        `decisions`: the custodian's record when the caller has already read it."""
        from ccdp.federation.node.projects import load_decisions, registered_here

        if self.registered:
            try:
                if study_hash(task.analysis, task.params, task.cohort) in self.registered:
                    return True
            except RegisteredStudyError:
                pass
        if task.project is None:
            return False
        return registered_here(task, load_decisions(self.store) if decisions is None else decisions)

    @staticmethod
    def _held_at_a_node(task: Task, policy: NodePolicy, registered: bool) -> bool:
        """Would a networked node hold this answer for its custodian (`review`)? Decided from
        the request and policy alone."""
        if registered or policy.exact_release == "any":
            return False
        return policy.exact_release == "reviewed" or not LocalNode._feasibility_tier(
            task, policy, registered
        )

    @staticmethod
    def _feasibility_tier(task: Task, policy: NodePolicy, registered: bool) -> bool:
        """Is this answer the feasibility tier (perturbed counts, declared levels only, released
        without review)? The one place the tier is decided, from the request and policy alone."""
        return (
            not registered
            and policy.counts == "perturbed"
            and task.analysis in FEASIBILITY_ANALYSES
        )

    def _request(
        self, task: Task, policy: NodePolicy, registered: bool = False
    ) -> tuple[Analysis, AnalysisParams, CohortSpec]:
        """Every check made before any data is read: project, policy, parameters, cohort."""
        self._check_project(task, policy)
        if policy.allowed_analyses is not None and task.analysis not in policy.allowed_analyses:
            raise Refusal("allowed_analyses", task.analysis)
        analysis = registry.get(task.analysis)
        params = analysis.params_model.model_validate(task.params)
        cohort = CohortSpec.load(task.cohort)
        analysis.check_request(params, set(cohort.root))
        if not registered:  # a registered study's counts are exact: the custodian audited them
            self._check_dedup(task, analysis, params, policy)
            self._check_feasibility(task, params, policy)
        return analysis, params, cohort

    def _check_dedup(
        self, task: Task, analysis: Analysis, params: AnalysisParams, policy: NodePolicy
    ) -> None:
        """`dedup: false` only where a custodian audits the release (docs/dedup.md): a study
        and its twin with the other `dedup` differ by exactly the linked children, so the pair
        is released only when registered (the acceptance audit sees both) or reviewed, never
        automatically (the feasibility tier, where fresh noise on each twin would average out,
        or `exact_release: any`). Decided from the request and policy alone."""
        if params.dedup or analysis.view_rows(params) == "specimens":
            return
        if policy.exact_release == "any" or self._feasibility_tier(task, policy, False):
            raise Refusal("dedup")

    def dedup_applies(self, params: AnalysisParams, rows: Rows) -> bool:
        """Does `dedup` leave rows out here: asked for, on tumour rows (a specimen is a real
        sample wherever the child is counted), and the store holds link groups?"""
        return params.dedup and rows == "tumours" and self._linked()

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
        decisions = load_decisions(self.store)
        registered = self.is_registered(task, decisions)
        feasibility = task.project is not None and self._feasibility_tier(task, policy, registered)
        if policy.exact_release == "any" and not (
            feasibility and policy.feasibility_budget is not None
        ):
            return None
        try:
            self._request(task, policy, registered)
        except Exception:  # answered before any data is read, as always (`answer` says how)
            return None
        if not feasibility:  # an exact answer: the custodian's record decides
            return review_reason(task, decisions, policy.exact_release)
        # the feasibility tier (perturbed, declared levels only, checked by _request): automatic
        # within the project's budget of tables at this node, counted without reading the data
        return spend_budget(self.store, task, policy.feasibility_budget)

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
        dedup = self.dedup_applies(params, rows)
        key = json.dumps(
            [cohort.to_json(), columns, rows, task.analysis, used, mode, dedup],
            sort_keys=True,
            default=str,
        )
        study = self._studies.get(task.study_id)
        if study is None or study.key != key:

            def load() -> pd.DataFrame:
                return self._read(columns, cohort, use, mode, rows=rows, dedup=dedup)

            def query(con: duckdb.DuckDBPyConnection, cols: list[str]) -> tuple[str, list[Any]]:
                return self._query(con, cols, cohort, use, mode, rows=rows, dedup=dedup)

            data = StoreData(self.name, None, self.store, cohort, load=load, query=query)
            study = _Study(key=key, data=data)
            if use is not None:
                study.excluded = self._excluded(cohort, use, mode, rows, dedup)
            outcome = analysis.followup_outcome(params)
            if outcome is not None:
                study.no_followup = self._no_followup(cohort, use, mode, outcome, dedup)
            if dedup:
                study.set_aside = self._set_aside(cohort, use, mode)
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

    def _linked(self) -> bool:
        """Whether this node's store holds link groups (`has_link_groups`, known from its
        snapshot)."""
        return self._snapshot().linked

    def _snapshot(self) -> Snapshot:
        """The store as this node reads it now (`snapshot.snapshot`): no store to open, no view
        to plan, per query; NodeError when the store cannot be read."""
        try:
            return snapshot(self.store, self.name)
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.name}: the store cannot be read ({kind})") from None

    def _read(
        self,
        columns: list[str] | None,
        cohort: CohortSpec,
        data_use: DataUse | None = None,
        mode: ConsentMode = "required",
        permitted: bool = True,
        rows: Rows = "tumours",
        dedup: bool = False,
        set_aside: bool = False,
    ) -> pd.DataFrame:
        """View rows of the cohort (tumours, or their available specimens); with a data use,
        those whose consent permits it (or, with `permitted=False`, those it excludes); with
        `dedup`, without the linked duplicates another node counts (`set_aside`: only those)."""
        cols = view_columns(rows) if columns is None else list(columns)
        keys = [*KEY_COLUMNS, "specimen_id"] if rows == "specimens" else KEY_COLUMNS
        cols += [c for c in keys if c not in cols]
        con = self._snapshot().cursor()
        try:
            sql, params = self._query(
                con, cols, cohort, data_use, mode, permitted, rows, dedup, set_aside
            )
            return con.execute(*_over_view(sql, params)).df()
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.name}: the store cannot be read ({kind})") from None
        finally:
            con.close()

    def _query(
        self,
        con: duckdb.DuckDBPyConnection,
        cols: list[str],
        cohort: CohortSpec,
        data_use: DataUse | None = None,
        mode: ConsentMode = "required",
        permitted: bool = True,
        rows: Rows = "tumours",
        dedup: bool = False,
        set_aside: bool = False,
    ) -> tuple[str, list[Any]]:
        """The SQL (and its parameters) of the cohort's view rows, `cols` only, over `con`
        (the store attached as `store`); with a data use and `dedup`, as `_read` says."""
        where, params = cohort.compile()
        if dedup:
            where = f"({where}) AND {'' if set_aside else 'NOT '}({set_aside_sql()})"
        if data_use is not None:
            distinct = con.execute("SELECT DISTINCT consent FROM store.patient").fetchall()
            ok, more = consent_filter((r[0] for r in distinct), data_use, mode)
            test = "IN" if permitted else "NOT IN"
            where = (
                f"({where}) AND v.patient_id {test} "
                f"(SELECT patient_id FROM store.patient WHERE {ok})"
            )
            params = [*params, *more]
        return cohort_sql(cols, where, rows=rows), [self.name, *params]

    def _excluded(
        self,
        cohort: CohortSpec,
        use: DataUse,
        mode: ConsentMode,
        of: Rows = "tumours",
        dedup: bool = False,
    ) -> np.ndarray:
        """Ledger keys (patient unit) of the cohort's patients that consent excludes from `use`
        (of the cohort's rows `of`, since a specimen cohort may filter on specimen variables;
        with `dedup`, of the children counted here): released only through the gate, as a
        count cell is."""
        rows = self._read(["patient_id"], cohort, use, mode, permitted=False, rows=of, dedup=dedup)
        keys = ledger_keys(
            rows["patient_id"], rows["tumour_id"], rows["tumour_seq"] == 1, "patients"
        )
        return as_set(keys)

    def _set_aside(self, cohort: CohortSpec, use: DataUse | None, mode: ConsentMode) -> np.ndarray:
        """Ledger keys (patient unit) of the cohort's patients (those consent permits, under a
        data use) that `dedup` leaves out here because another node's copy counts them: their
        number is released only through the gate, as a count cell is, so that it never tells
        apart one study with `dedup` on and off (docs/dedup.md)."""
        rows = self._read(["patient_id"], cohort, use, mode, dedup=True, set_aside=True)
        first = rows["tumour_seq"] == 1
        return as_set(ledger_keys(rows["patient_id"], rows["tumour_id"], first, "patients"))

    def _no_followup(
        self,
        cohort: CohortSpec,
        use: DataUse | None,
        mode: ConsentMode,
        outcome: str,
        dedup: bool = False,
    ) -> np.ndarray | None:
        """Ledger keys (patient unit) of the cohort's patients a survival analysis of `outcome`
        leaves out for a missing follow-up (released only through the gate, as a count cell);
        None when the store has no such patient at all, so a complete store says nothing."""
        needs, missing = followup_missing_sql(outcome)
        cols = [*KEY_COLUMNS, *needs]
        con = self._snapshot().cursor()
        try:
            (any_lost,) = con.execute(
                "SELECT count(*) FROM store.patient "
                "WHERE last_contact_date IS NULL AND death_date IS NULL"
            ).fetchall()[0]
            if not any_lost:
                return None
            sql, params = _over_view(*self._query(con, cols, cohort, use, mode, dedup=dedup))
            rows = con.execute(f"SELECT * FROM ({sql}) AS v WHERE {missing}", params).df()
        except duckdb.Error as exc:
            kind = type(exc).__name__
            raise NodeError(f"node {self.name}: the store cannot be read ({kind})") from None
        finally:
            con.close()
        first = rows["tumour_seq"] == 1
        return as_set(ledger_keys(rows["patient_id"], rows["tumour_id"], first, "patients"))

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

"""The node catalogue: what a node publishes of itself, computed at the node like any analysis.

Every count is a cell of the `count` analysis machinery (`analyses.cells.counts_part`, with the
records it counts) and leaves only through the disclosure gate (`disclosure.gate.release`) with
the node's policy and ledger, as a `count` task's answer does: small cells are suppressed, their
complements too, cells too close to an earlier release (a study's or an earlier catalogue's) are
suppressed by the differencing ledger, and what was released is recorded there. Each
publication is logged in the node's audit log, as an answered task is.

What else the catalogue says is judged by rules of the same kind (docs/catalogue.md):

* completeness per field is released only for a table whose row count was released and holds at
  least `min_cohort` rows;
* the diagnosis years are the first and last years holding at least `min_cell` tumours, so a
  child alone in the earliest or latest year is not dated by the range;
* the follow-up median comes from the node's grouped event-time table (each time an interval of
  at least min_cell subjects) passed through the gate, by the reverse Kaplan-Meier (censoring as
  the event), and only for a cohort of at least min_cohort;
* refresh rule: when fewer than the differencing threshold of patients' records changed since
  the last published catalogue (and its policy is the same), the node publishes that catalogue's
  figures again, so that two catalogues around one child's ingest (or correction) differ in
  nothing but their dates. The comparison is kept node-side (`<store stem>.catalogue.npz`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ccdp.analyses.cells import counts_part
from ccdp.analyses.count import Count, CountParams
from ccdp.analyses.event_data import YEAR_DAYS
from ccdp.analyses.km import event_table_part, km_group
from ccdp.cohort.spec import CohortSpec
from ccdp.cohort.view import declared_levels, has_link_groups
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import Checked, record, release
from ccdp.disclosure.policy import NodePolicy
from ccdp.disclosure.refusals import Refusal
from ccdp.errors import CcdpError
from ccdp.federation.node.local import (
    KEY_COLUMNS,
    LocalNode,
    NodeError,
    StoreData,
    connect_store,
)
from ccdp.federation.node.snapshot import store_state
from ccdp.model import load_model
from ccdp.wire.catalogue import Catalogue
from ccdp.wire.records import Records, Unit, ledger_keys
from ccdp.wire.summary import CountsPart, Summary

VIEW_COLUMNS = [
    "iccc_group",
    "sex",
    "age_group",
    "vital_status",
    "diagnosis_year",
    "os_time",
    "os_event",
]
BY = {"by_iccc_group": "iccc_group", "by_sex": "sex", "by_age_group": "age_group"}
# children (unit: patients) by a declared variable: the counts a subject-level reader (the CCDI
# API at the hub) needs, released by the same gate as a feasibility `count ... unit: patients`
PATIENTS_BY = ("sex", "vital_status", "iccc_group", "age_group")
ICCC_ORDER = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]
AGE_LABELS = {
    "0": "under 1 year",
    "1-4": "1-4 years",
    "5-9": "5-9 years",
    "10-14": "10-14 years",
    "15-19": "15-19 years",
}
UNKNOWN = ("other", "not recorded or outside the declared levels")
# tables whose rows hang off a tumour (their patient is the tumour's)
VIA_TUMOUR = ("event", "treatment", "biomarker", "specimen")
# columns read beside the primary key: to count by, and whose child a specimen is
EXTRA = {"specimen": ["type", "tumour_id"], "tumour": ["patient_id"]}
POLICY_KEYS = ("min_cell", "min_cohort", "zero_cells", "differencing_threshold")


class CatalogueError(CcdpError):
    """The node's catalogue cannot be computed or published."""


def state_paths(store: Path | str) -> tuple[Path, Path]:
    """`<store stem>.catalogue.json` (the last published catalogue) and `.catalogue.npz` (the
    patient fingerprints it was computed from): node-side only, never sent."""
    store = Path(store)
    return (
        store.with_name(f"{store.stem}.catalogue.json"),
        store.with_name(f"{store.stem}.catalogue.npz"),
    )


# -- what the store says of itself ----------------------------------------------------------------
def _tables(con: Any) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'store'"
    ).fetchall()
    return {r[0] for r in rows}


_LAST_INGEST: dict[str, tuple[object, datetime | None]] = {}


def last_ingest(store: Path | str) -> datetime | None:
    """When the store's last ingest finished (None for a store no ingest wrote): cheap, asked at
    every poll of the node agent, so the store is opened only when its file changed since the
    last answer (`snapshot.store_state`)."""
    key, state = str(Path(store).resolve()), store_state(Path(store))
    held = _LAST_INGEST.get(key)
    if held is not None and held[0] == state:
        return held[1]
    value = _read_last_ingest(store)
    _LAST_INGEST[key] = (state, value)
    return value


def _read_last_ingest(store: Path | str) -> datetime | None:
    try:
        con = connect_store(Path(store))
    except duckdb.Error as exc:  # an ingest holds the store: the agent asks again later
        raise CatalogueError(f"the store cannot be read now ({type(exc).__name__})") from None
    try:
        if "ingest_log" not in _tables(con):
            return None
        (value,) = con.execute("SELECT max(finished_at) FROM store.ingest_log").fetchall()[0]
    finally:
        con.close()
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fingerprints(con: Any, present: set[str]) -> pd.DataFrame:
    """One row per patient (or quarantined record): `entity` and `fp`, a hash over every stored
    row of theirs, so that comparing two fingerprints says how many patients' records changed
    (added, removed or corrected) between them."""
    model = load_model()
    selects = []
    for name in ("patient", "tumour", "trial_enrolment"):
        if name in present:
            selects.append(f"SELECT 'p:' || patient_id AS entity, hash(x) AS h FROM store.{name} x")
    for name in VIA_TUMOUR:
        if name in present and name in model.tables:
            selects.append(
                f"SELECT coalesce('p:' || t.patient_id, 't:' || x.tumour_id), hash(x) "
                f"FROM store.{name} x LEFT JOIN store.tumour t ON t.tumour_id = x.tumour_id"
            )
    for name in ("quarantine", "quality_flag"):
        if name in present:
            selects.append(
                f"SELECT 'q:' || table_name || ':' || coalesce(record_key, ''), hash(x) "
                f"FROM store.{name} x"
            )
    if not selects:
        return pd.DataFrame({"entity": pd.Series(dtype="uint64"), "fp": pd.Series(dtype="uint64")})
    sql = (
        "SELECT hash(entity) AS entity, hash(list_sort(list(h))) AS fp FROM ("
        + " UNION ALL ".join(selects)
        + ") GROUP BY entity"
    )
    return con.execute(sql).df().astype({"entity": "uint64", "fp": "uint64"})


def _fingerprint(store: Path) -> pd.DataFrame:
    """`fingerprints` over a connection of its own, closed at once: DuckDB keeps the working
    memory of its aggregate over every row (up to its limit) until the connection closes."""
    con = connect_store(store)
    try:
        return fingerprints(con, _tables(con))
    finally:
        con.close()


def changed_patients(old: pd.DataFrame, new: pd.DataFrame) -> int:
    """How many entities (patients, quarantined records) differ between two fingerprints."""
    both = old.merge(new, on="entity", how="outer", suffixes=("_old", "_new"))
    return int((both["fp_old"] != both["fp_new"]).sum())


# -- counts of store rows, for the count machinery -----------------------------------------------
@dataclass
class RowData:
    """NodeData over the rows of store tables (not the analysis view): each row is its own
    record, keyed by its table and primary key (column `_key`), so `counts_part` counts rows and
    the gate sees their sets as it sees a study's."""

    node: str
    frame: pd.DataFrame
    context: DisclosureContext

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.frame if columns is None else self.frame[columns]

    @property
    def disclosure(self) -> DisclosureContext:
        return self.context

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        return self.frame.loc[index, "_key"].to_numpy(dtype=np.uint64)

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        """Each row's own key; with an `_owner` column (specimens), judged by their children."""
        keys = self.record_keys(index, unit)
        row = np.zeros(len(keys), np.int64) if row is None else row
        if "_owner" not in self.frame:
            return Records(keys, row)
        owners = self.frame.loc[index, "_owner"].to_numpy(dtype=np.uint64)
        return Records(keys, row, owners, by_owner=True)

    def population(self) -> pd.DataFrame:
        raise LookupError("store rows have no population")


def row_keys(name: str, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Ledger keys of a table's rows: `<table>:<primary key>` hashed as the view's keys are."""
    text = pd.Series(f"{name}:", index=frame.index, dtype=object)
    for c in columns:
        text = text + frame[c].astype(str) + "|"
    return pd.util.hash_pandas_object(text, index=False).to_numpy().astype(np.uint64)


CHUNK_VECTORS = 64  # DuckDB vectors (2,048 rows) per chunk read: 131,072 rows


def _chunks(con: Any, sql: str) -> Iterator[pd.DataFrame]:
    """A query's rows as frames of at most CHUNK_VECTORS vectors, one held at a time."""
    result = con.execute(sql)
    while True:
        chunk = result.fetch_df_chunk(CHUNK_VECTORS)
        if not len(chunk):
            return
        yield chunk


def _keys(name: str, chunk: pd.DataFrame, primary_key: list[str]) -> np.ndarray:
    """Ledger keys of a chunk of a table's rows; patients keyed as the view's patients are."""
    if name == "patient":
        pid = chunk["patient_id"]
        return ledger_keys(pid, pid, pd.Series(True, chunk.index), "patients")
    return row_keys(name, chunk, primary_key)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.uint64) if parts else np.empty(0, np.uint64)


def _specimen_rows(con: Any, primary_key: list[str], present: set[str]) -> pd.DataFrame:
    """Specimen rows: `_key`, `specimen.type` and `_owner`, the key of their child (the
    tumour's patient): one child's many samples are one child's, so the gate judges each type's
    count by the children it comes from. A specimen of an unknown tumour counts as one unknown
    child's (patient "")."""
    cols = ", ".join(f's."{c}"' for c in primary_key)
    patient = "t.patient_id" if "tumour" in present else "NULL::VARCHAR"
    join = "LEFT JOIN store.tumour t ON t.tumour_id = s.tumour_id" if "tumour" in present else ""
    sql = f'SELECT {cols}, s."type", {patient} AS _patient FROM store.specimen s {join}'
    keys, owners, types = [], [], []
    for c in _chunks(con, sql):
        keys.append(row_keys("specimen", c, primary_key))
        pid = c["_patient"].astype(object).where(c["_patient"].notna(), "")
        owners.append(ledger_keys(pid, pid, pd.Series(True, c.index), "patients"))
        types.append(c["type"].astype("category"))  # one text object per type, not per row
    kind = pd.Series(dtype=object)
    if types:
        kind = pd.Series(pd.api.types.union_categoricals(types)).astype(object)
    return pd.DataFrame({"_key": _joined(keys), "specimen.type": kind, "_owner": _joined(owners)})


def _view_frame(node: LocalNode, con: Any) -> pd.DataFrame:
    """The view's rows the catalogue counts, each linked child once as a study with `dedup`
    counts it (docs/dedup.md): `LocalNode._read`'s rows and columns, but read over the
    catalogue's own bounded store connection (no in-memory snapshot of the whole view is built)
    and through Arrow, whose conversion holds each repeated label once rather than as a text
    object per row: at 10 million tumours, gigabytes less."""
    cols = [*VIEW_COLUMNS, *(c for c in KEY_COLUMNS if c not in VIEW_COLUMNS)]
    try:
        linked = has_link_groups(con, "store")
        sql, params = node._query(con, cols, CohortSpec(), dedup=linked)
        table = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        kind = type(exc).__name__
        raise NodeError(f"node {node.name}: the store cannot be read ({kind})") from None
    return table.to_pandas(deduplicate_objects=True)


def _renamed(part: CountsPart, count: str) -> CountsPart:
    """The same cells under another count name (a family of its own for the gate)."""
    old = part.counts[0]
    cells = [{**{k: v for k, v in c.items() if k != old}, count: c[old]} for c in part.cells]
    return replace(part, counts=[count], cells=cells)


def _cell(value: Any) -> dict[str, Any]:
    return (
        {"count": None, "suppressed": True}
        if value is None
        else {
            "count": int(value),
            "suppressed": False,
        }
    )


SUPPRESSED: dict[str, Any] = {"count": None, "suppressed": True}


# -- the computation -----------------------------------------------------------------------------
@dataclass
class Computed:
    """A catalogue as it would be published, with what its publication must record."""

    catalogue: Catalogue
    checked: list[Checked] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)
    fingerprint: pd.DataFrame | None = field(default=None, repr=False)
    held: bool = False  # the last published figures again (refresh rule)


class NodeCatalogue:
    """The catalogue of one node store; `compute()` shows it, `publish()` releases it."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.json_path, self.npz_path = state_paths(node.store)

    @classmethod
    def for_store(cls, store: Path | str, name: str | None = None) -> NodeCatalogue:
        return cls(LocalNode(store, name=name))

    # ---- public ----------------------------------------------------------------------------
    def compute(self, now: datetime | None = None) -> Computed:
        """The catalogue that would be published now (nothing recorded)."""
        now = now or datetime.now(UTC)
        policy = self.node.policy
        context = DisclosureContext(policy, self.node.ledger)
        fingerprint = _fingerprint(self.node.store)
        con = connect_store(self.node.store)
        try:
            present = _tables(con)
            held = self._held(policy, context, fingerprint)
            if held is not None:
                body = {
                    **held,
                    "node": self.node.name,
                    "generated_at": now,
                    "last_ingest": last_ingest(self.node.store),
                    "policy": self._policy(policy, context),
                }
                notes = [
                    "refresh rule: fewer patients' records changed since the last published "
                    f"catalogue than the differencing threshold ({context.threshold}); its "
                    "figures are published again"
                ]
                return Computed(Catalogue.model_validate(body), notes=notes, held=True)
            return self._fresh(con, present, policy, context, fingerprint, now)
        finally:
            con.close()

    def publish(self, now: datetime | None = None) -> Computed:
        """Compute, record the released sets in the ledger, log the publication in the audit
        log and keep it as the last published catalogue. Call just before sending it."""
        computed = self.compute(now)
        context = DisclosureContext(self.node.policy, self.node.ledger)
        meta = {"catalogue": computed.catalogue.generated_at.isoformat()}
        for checked in computed.checked:
            # the follow-up table's rows stay in the ledger for the differencing rule, but only
            # their median leaves: no count of them is published (nor audited as one)
            table = "follow_up" in checked.summary.parts
            record(checked, context, {**meta, "counts": "none"} if table else meta)
        body = computed.catalogue.model_dump(mode="json")
        self.node.audit.append(
            {
                "time": computed.catalogue.generated_at.isoformat(),
                "node": self.node.name,
                "task_id": None,
                "study_id": None,
                "round": None,
                "analysis": "catalogue",
                "status": "answered",
                "reason": "; ".join(computed.notes) or None,
                "detail": None,
                "summary": body,
            }
        )
        self.json_path.write_text(json.dumps(body), encoding="utf-8")
        if computed.fingerprint is not None:  # a held catalogue keeps its base for the rule
            fp = computed.fingerprint
            np.savez(
                self.npz_path,
                entity=fp["entity"].to_numpy(np.uint64),
                fp=fp["fp"].to_numpy(np.uint64),
            )
        return computed

    def last_published(self) -> Catalogue | None:
        if not self.json_path.exists():
            return None
        return Catalogue.model_validate_json(self.json_path.read_text(encoding="utf-8"))

    # ---- the refresh rule ------------------------------------------------------------------
    def _held(
        self, policy: NodePolicy, context: DisclosureContext, fingerprint: pd.DataFrame
    ) -> dict[str, Any] | None:
        """The last published figures when too few patients changed since (else None)."""
        if context.threshold <= 1 or not (self.json_path.exists() and self.npz_path.exists()):
            return None
        last = json.loads(self.json_path.read_text(encoding="utf-8"))
        before = last.get("policy", {})
        if any(before.get(k) != self._policy(policy, context).get(k) for k in POLICY_KEYS):
            return None  # figures released under other thresholds: computed afresh
        with np.load(self.npz_path) as saved:
            old = pd.DataFrame({"entity": saved["entity"], "fp": saved["fp"]})
        changed = changed_patients(old, fingerprint)
        if changed == 0 or changed >= context.threshold:
            return None
        return last

    # ---- a fresh catalogue -----------------------------------------------------------------
    def _policy(self, policy: NodePolicy, context: DisclosureContext) -> dict[str, Any]:
        out = policy.model_dump(exclude={"name"})
        out["differencing_threshold"] = context.threshold
        return out

    def _fresh(
        self,
        con: Any,
        present: set[str],
        policy: NodePolicy,
        context: DisclosureContext,
        fingerprint: pd.DataFrame,
        now: datetime,
    ) -> Computed:
        node = self.node
        # each linked child once, as a study with `dedup` (the default) counts it (docs/dedup.md)
        frame = self._view(con)
        data = StoreData(node.name, frame, node.store, CohortSpec(), context)
        notes: list[str] = []
        checked: list[Checked] = []
        tables = self._table_frames(con, present)

        # the view: tumours, patients, by group, and the patient and tumour tables' rows
        count = Count()
        parts: dict[str, CountsPart] = {}
        for key, var in BY.items():
            summary = count.local(data, CountParams(by=[var]), {}, {})
            parts[key] = summary.parts["cells"]  # type: ignore[assignment]
            parts["tumours"] = summary.parts["total"]  # type: ignore[assignment]
        patients = count.local(data, CountParams(unit="patients"), {}, {}).parts["total"]
        parts["patients"] = _renamed(patients, "patients")  # type: ignore[arg-type]
        for var in PATIENTS_BY:
            summary = count.local(data, CountParams(by=[var], unit="patients"), {}, {})
            part = summary.parts["cells"]
            parts[f"patients_by:{var}"] = _renamed(part, "patients")  # type: ignore[arg-type]
        parts["rows:tumour"] = _renamed(parts["tumours"], "rows:tumour")
        if "patient" in tables:
            rows = RowData(node.name, self._patient_rows(tables["patient"]), context)
            parts["rows:patient"] = counts_part(rows, rows.frame, [], count="rows:patient")
        view = self._release(Summary(parts=dict(parts)), context, checked, notes)
        view_ok = view is not None

        # the other tables, specimens by type, the quality edits (rows, not children)
        other: dict[str, CountsPart] = {}
        for name, tframe in tables.items():
            if name in ("patient", "tumour"):
                continue
            keyed = tframe[["_key"]]  # its rows by themselves (specimens: not by owner)
            rows = RowData(node.name, keyed, context)
            other[f"rows:{name}"] = counts_part(rows, keyed, [], count=f"rows:{name}")
        if "specimen" in tables:
            spec = self._specimen_owners(tables)
            rows = RowData(node.name, spec, context)
            other["specimens"] = counts_part(rows, spec, ["specimen.type"], count="specimens")
        edits = self._edit_rows(con, present)
        for name, eframe in edits.items():
            rows = RowData(node.name, eframe, context)
            by = ["edit_id"] if name == "edit_rows" else []
            other[name] = counts_part(rows, eframe, by, count=name)
        rest = (
            self._release(Summary(parts=dict(other)), context, checked, notes) if view_ok else None
        )

        def total(released: dict[str, Any] | None, name: str) -> Any:
            if released is None or name not in released:
                return None
            return released[name].cells[0][released[name].counts[0]]

        body: dict[str, Any] = {
            "node": node.name,
            "country": self._country(con, present),
            "generated_at": now,
            "last_ingest": last_ingest(node.store),
            "policy": self._policy(policy, context),
            "patients": _cell(total(view, "patients")),
            "tumours": _cell(total(view, "tumours")),
        }
        body["tables"] = self._table_info(con, view, rest, policy, total)
        body["diagnosis_years"] = self._years(data, policy) if view_ok else {}
        for key, var in BY.items():
            body[key] = self._levels(var, view[key] if view else None, policy)
        body["patients_by"] = {
            var: self._levels(var, view[f"patients_by:{var}"] if view else None, policy, "patients")
            for var in PATIENTS_BY
        }
        body["follow_up"] = self._follow_up(data, policy, context, checked, notes, view_ok)
        body["specimens"] = self._specimens(rest, policy)
        body["quality"] = self._quality(edits, rest, tables, body["tables"], policy, view_ok)
        return Computed(Catalogue.model_validate(body), checked, notes, fingerprint)

    def _view(self, con: Any) -> pd.DataFrame:
        """The view's rows counted (`_view_frame`)."""
        return _view_frame(self.node, con)

    def _release(
        self,
        summary: Summary,
        context: DisclosureContext,
        checked: list[Checked],
        notes: list[str],
    ) -> dict[str, Any] | None:
        """The gate's released parts (None when it refused them all: a node below min_cohort)."""
        if not summary.parts:
            return {}
        try:
            out = release(summary, context)
        except Refusal as exc:
            notes.append(str(exc))
            return None
        checked.append(out)
        notes.extend(out.notes)
        return dict(out.summary.parts)

    def _table_frames(self, con: Any, present: set[str]) -> dict[str, pd.DataFrame]:
        """Each model table's rows as their ledger keys (`_key`) and only what is counted by
        (a specimen's type and its child, `_owner`): read a chunk at a time, so no table's text
        columns are held, which at 10M tumours would not fit the node's memory."""
        out = {}
        for tdef in load_model().tables.values():
            if tdef.name not in present:
                continue
            if tdef.name == "specimen":
                out["specimen"] = _specimen_rows(con, list(tdef.primary_key), present)
                continue
            cols = ", ".join(f'"{c}"' for c in tdef.primary_key)
            chunks = _chunks(con, f'SELECT {cols} FROM store."{tdef.name}"')
            keys = [_keys(tdef.name, c, list(tdef.primary_key)) for c in chunks]
            out[tdef.name] = pd.DataFrame({"_key": _joined(keys)})
        return out

    @staticmethod
    def _patient_rows(frame: pd.DataFrame) -> pd.DataFrame:
        """Patient rows keyed as the view's patients are (`_table_frames` already did)."""
        return frame

    @staticmethod
    def _specimen_owners(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """Specimen rows with the key of their child (`_owner`; `_specimen_rows` did it)."""
        return tables["specimen"]

    def _edit_rows(self, con: Any, present: set[str]) -> dict[str, pd.DataFrame]:
        """Rows failing the edits: unresolved quarantined rows and flagged rows, per edit."""
        from ccdp.quality.report import REASON_TYPE

        parts = []
        if "quarantine" in present:
            parts.append(
                f"""SELECT 'q' AS kind, u.r.edit_id AS edit_id, q.ingest_id, q.table_name,
                       q.source_file, q.source_row, q.record_key
                FROM store.quarantine q,
                     unnest(from_json(q.reasons, '{REASON_TYPE}')) AS u(r)
                WHERE q.resolved_at IS NULL"""
            )
        if "quality_flag" in present:
            parts.append(
                "SELECT 'f', edit_id, ingest_id, table_name, source_file, source_row, record_key "
                "FROM store.quality_flag"
            )
        if not parts:
            return {}
        rows = con.execute(" UNION ALL ".join(parts)).df()
        cols = ["ingest_id", "table_name", "source_file", "source_row"]
        rows["_key"] = row_keys("quality", rows, cols)
        quarantined = rows[rows["kind"] == "q"].drop_duplicates("_key").reset_index(drop=True)
        flagged = rows[rows["kind"] == "f"].copy()
        flagged["_key"] = row_keys("flagged", flagged, ["table_name", "record_key"])
        flagged = flagged.drop_duplicates("_key").reset_index(drop=True)
        per_edit = rows.drop_duplicates(["edit_id", "_key"]).reset_index(drop=True)
        return {"quarantined": quarantined, "flagged": flagged, "edit_rows": per_edit}

    @staticmethod
    def _country(con: Any, present: set[str]) -> str | None:
        """The country of the node's patients when they all share one (no count involved)."""
        if "patient" not in present:
            return None
        rows = con.execute(
            "SELECT DISTINCT country FROM store.patient WHERE country IS NOT NULL"
        ).fetchall()
        return str(rows[0][0])[:2] if len(rows) == 1 else None

    @staticmethod
    def _table_info(
        con: Any,
        view: dict[str, Any] | None,
        rest: dict[str, Any] | None,
        policy: NodePolicy,
        total: Any,
    ) -> list[dict[str, Any]]:
        """Tables, their released row counts, and completeness where the table is released
        and holds at least min_cohort rows."""
        from ccdp.quality.report import field_completeness

        con.execute("USE store")
        filled: dict[str, list[tuple[str, int, int]]] = {}
        for c in field_completeness(con):
            filled.setdefault(c.table, []).append((c.field, c.filled, c.total))
        out = []
        for tdef in load_model().tables.values():
            source = view if tdef.name in ("patient", "tumour") else rest
            rows = total(source, f"rows:{tdef.name}")
            show = rows is not None and rows >= policy.min_cohort
            fields = [
                {
                    "name": name,
                    # a conditional field is measured over the rows it applies to (the
                    # deceased): a share of fewer than min_cohort of them is not released
                    "completeness": (
                        round(100 * n / of, 1) if show and of >= policy.min_cohort else None
                    ),
                }
                for name, n, of in filled.get(tdef.name, [])
            ]
            out.append({"name": tdef.name, **_table_cell(rows), "fields": fields})
        return out

    @staticmethod
    def _levels(
        var: str, part: CountsPart | None, policy: NodePolicy, count: str = "n"
    ) -> list[dict[str, Any]]:
        """One cell per declared level, in its order; absent levels are zeros (as a count
        analysis reads them), released as such unless zeros are suppressed. `count` names the
        part's count column."""
        levels = declared_levels(var) or frozenset()
        order = ICCC_ORDER if var == "iccc_group" else _level_order(var, levels)
        zero = {"count": 0, "suppressed": False}
        if policy.zero_cells == "suppress":
            zero = dict(SUPPRESSED)
        labels = _labels(var)
        cells: dict[Any, Any] = {}
        if part is not None:
            cells = {c.get(var): c.get(count) for c in part.cells}
        out = []
        for level in order:
            cell = SUPPRESSED if part is None else _cell(cells[level]) if level in cells else zero
            out.append({"level": level, "label": labels.get(level, level), **cell})
        if part is not None and (part.withheld or any(k not in levels for k in cells)):
            # values outside the declared levels (missing, unclassified, 20 years or older):
            # one cell, released only when the gate released every one of them
            values = [cells[k] for k in cells if k not in levels]
            whole = not part.withheld and all(v is not None for v in values)
            n = sum(values) if whole else None
            out.append({"level": UNKNOWN[0], "label": UNKNOWN[1], **_cell(n)})
        return out

    @staticmethod
    def _years(data: StoreData, policy: NodePolicy) -> dict[str, Any]:
        """First and last diagnosis years whose tumour count reaches min_cell (the counts are
        the count analysis's; only the two years leave)."""
        part = Count().local(data, CountParams(by=["diagnosis_year"]), {}, {}).parts["cells"]
        assert isinstance(part, CountsPart)
        years = sorted(
            int(c["diagnosis_year"])
            for c in part.cells
            if c.get("diagnosis_year") is not None and c["n"] >= policy.min_cell
        )
        return {"first": years[0], "last": years[-1]} if years else {}

    def _follow_up(
        self,
        data: StoreData,
        policy: NodePolicy,
        context: DisclosureContext,
        checked: list[Checked],
        notes: list[str],
        view_ok: bool,
    ) -> dict[str, Any]:
        """Median follow-up by the reverse Kaplan-Meier over the node's grouped event-time
        table, released by the gate (min_cohort, grouped times, the ledger)."""
        out: dict[str, Any] = {"median_years": None, "released": False}
        if not view_ok or policy.event_times == "forbid":
            return out
        try:
            part = event_table_part(data, "os", [], policy.event_times)
            result = release(Summary(parts={"follow_up": part}), context)
        except Refusal as exc:
            notes.append(f"follow-up: {exc}")
            return out
        except CcdpError:
            return out  # no usable survival times: nothing to say
        table = result.summary.parts["follow_up"]
        cols = table.columns  # type: ignore[union-attr]
        if not len(cols["time"]):
            notes.extend(result.notes)
            return out
        # reverse KM: a censoring is the event, a death censors follow-up
        block = pd.DataFrame(
            {"time": cols["time"], "events": cols["censored"], "censored": cols["events"]}
        )
        median = km_group("all", block).median
        checked.append(result)
        out["released"] = True
        out["median_years"] = None if median is None else round(median / YEAR_DAYS, 2)
        return out

    @staticmethod
    def _specimens(rest: dict[str, Any] | None, policy: NodePolicy) -> list[dict[str, Any]]:
        levels = declared_levels("specimen.type") or frozenset()
        order = _level_order("specimen.type", levels)
        if rest is None:
            return [{"type": t, **SUPPRESSED} for t in order]
        part = rest.get("specimens")
        cells = {c.get("specimen.type"): c.get("specimens") for c in part.cells} if part else {}
        zero = SUPPRESSED if policy.zero_cells == "suppress" else {"count": 0, "suppressed": False}
        return [{"type": t, **(_cell(cells[t]) if t in cells else zero)} for t in order]

    @staticmethod
    def _quality(
        edits: dict[str, pd.DataFrame],
        rest: dict[str, Any] | None,
        tables: dict[str, pd.DataFrame],
        table_info: list[dict[str, Any]],
        policy: NodePolicy,
        view_ok: bool,
    ) -> dict[str, Any]:
        """Score: the share of stored and quarantined rows that no edit failed (0 to 100), for
        at least min_cohort rows; per edit, its released count of failing rows."""
        from ccdp.quality.edits import load_edits

        stored = sum(len(f) for n, f in tables.items() if n != "population")
        quarantined = len(edits["quarantined"]) if edits else 0
        flagged = len(edits["flagged"]) if edits else 0
        checked_rows = stored + quarantined
        score = None
        if view_ok and checked_rows >= policy.min_cohort:
            share = 1 - min(checked_rows, quarantined + flagged) / checked_rows
            score = round(100 * share, 1)

        def released(name: str) -> Any:
            if rest is None or name not in rest:
                return None if rest is None else 0
            part = rest[name]
            return part.cells[0][name]

        severity = {e.id: e.severity for e in load_edits()}
        failed = []
        withheld = 0
        if rest is not None and "edit_rows" in rest:
            part = rest["edit_rows"]
            withheld = part.withheld
            for c in part.cells:
                failed.append(
                    {
                        "edit_id": str(c["edit_id"]),
                        "severity": severity.get(str(c["edit_id"]), "error"),
                        **_cell(c["edit_rows"]),
                    }
                )
        return {
            "score": score,
            "edits": {
                "quarantined_rows": _cell(released("quarantined")),
                "flagged_rows": _cell(released("flagged")),
                "failed": failed,
                "withheld": withheld,
            },
        }


def _table_cell(rows: Any) -> dict[str, Any]:
    return (
        {"rows": None, "suppressed": True}
        if rows is None
        else {
            "rows": int(rows),
            "suppressed": False,
        }
    )


def _level_order(var: str, levels: frozenset[str]) -> list[str]:
    """A declared level set in its natural order (age bands by their lower bound)."""
    from ccdp.wire.levels import sort_key

    if var == "specimen.type" or var == "sex":
        allowed = _model_allowed(var)
        if allowed:
            return allowed
    return sorted(levels, key=lambda v: sort_key((v,)))


def _model_allowed(var: str) -> list[str]:
    table, field_name = ("patient", "sex") if var == "sex" else var.split(".", 1)
    tdef = load_model().tables[table]
    fdef = next(f for f in tdef.fields if f.name == field_name)
    return [str(v) for v in fdef.allowed or []]


def _labels(var: str) -> dict[str, str]:
    if var == "age_group":
        return AGE_LABELS
    if var == "iccc_group":
        from ccdp.terminology.iccc import iccc_codes

        codes = iccc_codes()
        return dict(zip(codes["group"], codes["group_label"], strict=True))
    return {}


__all__ = ["CatalogueError", "Computed", "NodeCatalogue", "last_ingest", "state_paths"]


_NEVER = object()


class CatalogueWatch:
    """What the node agent asks at each poll cycle: publish the catalogue at start and again
    whenever the store's last ingest or the node's policy changes (the catalogue shows it).
    Under `release: manual` it publishes nothing on its own and says, once per change, that
    the catalogue waits for the custodian."""

    def __init__(
        self,
        node: Any,
        manual: Any,
        on_event: Any,
        hub_url: str = "HUB",
    ) -> None:
        """`node()` gives the agent's LocalNode, `manual()` whether release is manual now."""
        self._node, self._manual, self._on_event = node, manual, on_event
        self.hub_url = hub_url
        self._sent: object = _NEVER
        self._told: object = _NEVER

    def _ingest(self) -> tuple[datetime | None, str]:
        node: LocalNode = self._node()
        return last_ingest(node.store), node.policy.model_dump_json()

    def due(self) -> bool:
        """True at start, after each new ingest and each policy change, until published
        (cheap: one query and the policy file)."""
        return self._ingest() != self._sent

    def prepare(self) -> tuple[dict[str, Any], object] | None:
        """The catalogue to send now (recorded in the ledger and audit log), with the mark to
        pass to `sent`; None under manual release."""
        ingest = self._ingest()
        node: LocalNode = self._node()
        if self._manual():
            if self._told != ingest:
                self._told = ingest
                self._on_event(
                    "catalogue not published (release: manual): it waits for the custodian, "
                    f"who runs `ccdp node catalogue --store {node.store} --publish "
                    f"--hub {self.hub_url} --token T`"
                )
            return None
        computed = NodeCatalogue(node).publish()
        return computed.catalogue.model_dump(mode="json"), ingest

    def sent(self, mark: object) -> None:
        self._sent = mark

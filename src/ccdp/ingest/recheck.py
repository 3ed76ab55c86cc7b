"""Stored children of changed parents, checked again inside the ingest that changed the parent.

A row's cross-table edits (date order, sex/site, age/histology, vital status, references) read its
parents. When an ingest changes a stored parent (a patient's birth date, sex or death date sent
again alone; a tumour's diagnosis date), the stored descendants would otherwise keep verdicts given
against the old values: no flag where one is now due, stale flags where the fault was fixed.

Before the upsert `Recheck.find` records the accepted rows that replace a stored row with
different values (any field); after it, table by table down the model, `stored_work` presents
every stored descendant of those rows as work rows (typed values, canonical raw text, `_row`,
`_key`, `_cause`), `check` runs their cross-table edits against the store as it now is, and rows
failing an error-level edit are moved to quarantine (their own descendants follow through the
reference check). The pipeline writes quarantine entries and flags with its usual helpers.
Nothing happens when no stored row changed, e.g. on a first ingest or a repeated one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb

from ccdp.model import TableDef, load_model
from ccdp.quality.engine import RESULTS, EditRun, cross_table_edit_ids, key_expr, topological
from ccdp.store.typed import any_row, lit, q, raw_column, raw_text_expr


def _stored_columns(tdef: TableDef) -> list[str]:
    """The columns that say what a row is: input fields and the precision of partial dates."""
    return [f.name for f in tdef.fields if not f.derived or f.name.endswith("_precision")]


def _key_match(tdef: TableDef, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in tdef.primary_key)


def _descendants(table: str) -> list[str]:
    """Tables below `table` by foreign keys, parents first."""
    model = load_model()
    found: set[str] = set()
    for name in topological(model.table_names):
        parents = {ref.split(".")[0] for ref in model.table(name).foreign_keys.values()}
        if parents & (found | {table}):
            found.add(name)
    return [t for t in topological(model.table_names) if t in found]


@dataclass
class Recheck:
    """The re-check of one ingest (see module docstring); temp tables chg_, aff_, rw_, rq_."""

    con: duckdb.DuckDBPyConnection
    ingest_id: str
    today: date
    changed: list[str]
    moved: set[str] = field(default_factory=set)  # tables with rows moved to quarantine

    @classmethod
    def find(
        cls, con: duckdb.DuckDBPyConnection, work: dict[str, str], ingest_id: str, today: date
    ) -> Recheck | None:
        """Before the upsert: temp tables chg_<table> (keys, `_cause`) of this ingest's accepted
        rows replacing a stored row with other values, for tables with stored descendants."""
        model = load_model()
        changed: list[str] = []
        for table in topological(list(work)):
            below = _descendants(table)
            if not below or not any_row(con, f"main.{q(table)}"):
                continue
            if not any(any_row(con, f"main.{q(d)}") for d in below):
                continue
            tdef = model.table(table)
            differs = " OR ".join(
                f"w.{q(c)} IS DISTINCT FROM s.{q(c)}" for c in _stored_columns(tdef)
            )
            keys = ", ".join(f"w.{q(k)}" for k in tdef.primary_key)
            cause = (
                f"concat({lit(table + ' ')}, '''', {key_expr(tdef, 'w')}, ''' in ', "
                "w._source_file, ' row ', CAST(w._source_row AS VARCHAR))"
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE chg_{table} AS SELECT {keys}, {cause} AS _cause "
                f"FROM {q(work[table])} w JOIN main.{q(table)} s ON {_key_match(tdef, 'w', 's')} "
                f"ANTI JOIN (SELECT _row FROM {RESULTS} WHERE table_name = {lit(table)} "
                f"AND severity = 'error') e ON e._row = w._row WHERE {differs}"
            )
            if any_row(con, f"chg_{table}"):
                changed.append(table)
        return cls(con, ingest_id, today, changed) if changed else None

    def tables(self) -> list[str]:
        """Tables whose stored rows may be affected, parents first."""
        below = {d for t in self.changed for d in _descendants(t)}
        return [t for t in topological(load_model().table_names) if t in below]

    def stored_work(self, table: str) -> str | None:
        """After the upsert: temp table rw_<table> of the stored rows to check again, as work
        rows, or None. Affected (aff_<table>) are the rows that changed in this ingest and the
        stored rows whose parent is affected; checked are the affected rows this ingest did not
        write (those were checked against the new parents already), and those it wrote whose
        parent has just been moved to quarantine."""
        tdef = load_model().table(table)
        if not self._affected(tdef):
            return None
        keep = f"s._ingest_id IS DISTINCT FROM {lit(self.ingest_id)}"
        for col, ref in tdef.foreign_keys.items():
            parent, pcol = ref.split(".")
            if parent in self.moved:
                keep += f" OR s.{q(col)} IN (SELECT {q(pcol)} FROM rq_{parent})"
        cols = [f"s.{q(c)}" for c in _stored_columns(tdef)]
        for f in tdef.input_fields:
            if raw_column(f) != f.name:
                precision = f.name + "_precision"
                prec = f"s.{q(precision)}" if precision in tdef.field_names else None
                cols.append(f"{raw_text_expr(f, f's.{q(f.name)}', prec)} AS {q(raw_column(f))}")
        inner = (
            f"SELECT s._source_file, s._source_row, {', '.join(cols)}, a._cause "
            f"FROM main.{q(table)} s JOIN aff_{table} a ON {_key_match(tdef, 's', 'a')} "
            f"WHERE {keep}"
        )
        name = f"rw_{table}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT row_number() OVER () AS _row, x.*, "
            f"{key_expr(tdef, 'x')} AS _key FROM ({inner}) x"
        )
        return name if any_row(self.con, name) else None

    def _affected(self, tdef: TableDef) -> bool:
        table = tdef.name
        keys = ", ".join(q(k) for k in tdef.primary_key)
        parts = [f"SELECT {keys}, _cause FROM chg_{table}"] if table in self.changed else []
        for col, ref in tdef.foreign_keys.items():
            parent, pcol = ref.split(".")
            # the parent's affected rows; a changed table that is no one's descendant is its own
            source = f"aff_{parent}" if self._has(f"aff_{parent}") else f"chg_{parent}"
            if source.startswith("chg_") and parent not in self.changed:
                continue
            ckeys = ", ".join(f"c.{q(k)}" for k in tdef.primary_key)
            inherited = (
                f"SELECT {ckeys}, a._cause FROM main.{q(table)} c "
                f"JOIN {source} a ON c.{q(col)} = a.{q(pcol)}"
            )
            if table in self.changed:
                inherited += f" ANTI JOIN chg_{table} x ON {_key_match(tdef, 'c', 'x')}"
            parts.append(inherited)
        if not parts:
            return False
        name = f"aff_{table}"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {' UNION ALL '.join(parts)}")
        return any_row(self.con, name)

    def _has(self, temp: str) -> bool:
        sql = "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?"
        return bool(self.con.execute(sql, [temp]).fetchall()[0][0])

    def check(self, table: str) -> str:
        """Run the cross-table edits of rw_<table> into `qr`, each message saying which change
        caused it; the row's other stored flags are carried into `qr` too, so that flags can be
        rewritten and quarantine holds every reason. Returns temp table rerr_<table> (_row) of
        the rows with an error."""
        tdef = load_model().table(table)
        work = f"rw_{table}"
        self._parent_views(tdef)
        EditRun(self.con, {table: work}, today=self.today).run_cross_table(table)
        self.con.execute(
            f"UPDATE {RESULTS} SET message = concat(message, ' ({table} ''', r._key, "
            f"''' checked again after the change of ', r._cause, ')') FROM {work} r "
            f"WHERE {RESULTS}._row = r._row"
        )
        ids = ", ".join(lit(i) for i in cross_table_edit_ids(table))
        self.con.execute(
            f"INSERT INTO {RESULTS} SELECT {lit(table)}, r._row, f.edit_id, f.severity, f.field, "
            f"f.value, f.message FROM quality_flag f JOIN {work} r ON f.record_key = r._key "
            f"WHERE f.table_name = {lit(table)} AND f.edit_id NOT IN ({ids})"
        )
        err = f"rerr_{table}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {err} AS SELECT DISTINCT _row FROM {RESULTS} "
            "WHERE severity = 'error'"
        )
        return err

    def _parent_views(self, tdef: TableDef) -> None:
        """eff_<ancestor>: the stored rows (the store after the upsert), plus the rows just moved
        to quarantine, marked not ok so that their children follow them."""
        for ref in tdef.foreign_keys.values():
            parent = load_model().table(ref.split(".")[0])
            cols = ", ".join(q(c) for c in _stored_columns(parent))
            body = f"SELECT {cols}, true AS _ok FROM main.{q(parent.name)}"
            if parent.name in self.moved:
                body += f" UNION ALL SELECT {cols}, false AS _ok FROM rq_{parent.name}"
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW eff_{parent.name} AS {body}")
            self._parent_views(parent)

    def failed(self, table: str, err: str) -> str | None:
        """Temp table rq_<table> of the checked rows that now fail an error-level edit, or None."""
        if not any_row(self.con, err):
            return None
        name = f"rq_{table}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT r.* FROM rw_{table} r "
            f"SEMI JOIN {err} e ON e._row = r._row"
        )
        self.moved.add(table)
        return name

    def remove(self, table: str) -> None:
        """Take the rows of rq_<table> and their flags out of the store (they are quarantined)."""
        tdef = load_model().table(table)
        self.con.execute(
            f"DELETE FROM quality_flag WHERE table_name = {lit(table)} "
            f"AND record_key IN (SELECT _key FROM rq_{table})"
        )
        self.con.execute(
            f"DELETE FROM main.{q(table)} t USING rq_{table} a WHERE {_key_match(tdef, 't', 'a')}"
        )

    def count(self, relation: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])

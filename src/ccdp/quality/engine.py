"""Run the validation edits as DuckDB SQL over an ingest's work tables.

Input: one work table per data-model table (`ccdp.store.typed.work_select`: typed columns, raw
text in `<field>__raw`, `_row`, `_source_file`, `_source_row`), living in the store's connection so
parents can be looked up among the rows already stored. Output: the temp table `qr` with one row
per failed edit (table_name, _row, edit_id, severity, field, value, message). Each edit is one
set-based statement; nothing loops over rows in Python.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import duckdb

from ccdp.model import FieldDef, TableDef, load_model
from ccdp.quality.codes import invalid_codes
from ccdp.quality.edits import Edit, edits_by_check, load_edits, reference_table
from ccdp.store.typed import TYPE_WORDS, any_row, lit, q, raw_column

RESULTS = "qr"
MIN_DATE = "1900-01-01"
_CONTROL = r"'\p{Cc}'"  # RE2: C0 and C1 control characters and DEL (NUL, tab, newline, ...)

_MACROS = [
    # completed years between two dates (age at an event, as registries count it)
    """CREATE OR REPLACE TEMP MACRO ccdp_age(b, d) AS date_sub('year', b, d)""",
    # a birth date known to the month only may be as early as the 1st of that month
    """CREATE OR REPLACE TEMP MACRO ccdp_earliest_birth(b, p) AS
       CASE WHEN p = 'month' THEN CAST(date_trunc('month', b) AS DATE) ELSE b END""",
]

_REFERENCES: dict[str, dict[str, str]] = {
    "sex_site": {
        "topography_from": "VARCHAR",
        "topography_to": "VARCHAR",
        "impossible_sex": "VARCHAR",
        "label": "VARCHAR",
    },
    "behaviour_site": {
        "topography_from": "VARCHAR",
        "topography_to": "VARCHAR",
        "impossible_behaviour": "INTEGER",
        "label": "VARCHAR",
    },
    "age_histology": {
        "morphology_from": "VARCHAR",
        "morphology_to": "VARCHAR",
        "age_min": "INTEGER",
        "age_max": "INTEGER",
        "label": "VARCHAR",
    },
}


def key_expr(
    table: TableDef, alias: str = "r", column: Callable[[FieldDef], str] = raw_column
) -> str:
    """The row's key as text (composite keys joined by '|'), from the raw values (or from the
    work column `column` names for each key field)."""
    parts = [f"coalesce({alias}.{q(column(table.field(k)))}, '')" for k in table.primary_key]
    return parts[0] if len(parts) == 1 else f"concat_ws('|', {', '.join(parts)})"


def _conflicts_sql(tdef: TableDef) -> str:
    """Aggregate SQL over rows sharing a key: the fields whose values differ, as written
    ('morphology 9836/3 vs 9837/3; sex 1 vs 2'), or '' when the rows are identical. A
    morphology is shown with its behaviour, as ICD-O-3 writes it."""
    names = {f.name for f in tdef.input_fields}
    parts = []
    for f in tdef.input_fields:
        if f.name in tdef.primary_key or (f.name == "behaviour" and "morphology" in names):
            continue
        value = f"coalesce({q(raw_column(f))}, '(empty)')"
        if f.name == "morphology" and "behaviour" in names:
            behaviour = q(raw_column(tdef.field("behaviour")))
            slash = f"CASE WHEN {behaviour} IS NULL THEN '' ELSE '/' || {behaviour} END"
            value = f"concat({value}, {slash})"
        parts.append(
            f"CASE WHEN count(DISTINCT {value}) > 1 THEN {lit(f.name + ' ')} || "
            f"string_agg(DISTINCT {value}, ' vs ' ORDER BY {value}) END"
        )
    return f"concat_ws('; ', {', '.join(parts)})" if parts else "''"


def _escaped(raw: str) -> str:
    """SQL of a text value with control characters written as JSON escapes (NUL -> \\u0000)."""
    js = f"CAST(to_json({raw}) AS VARCHAR)"
    return f"substr({js}, 2, length({js}) - 2)"


def template_sql(text: str) -> str:
    """'is before {patient.birth_date}' -> concat('is before ', <the date as text>)."""
    pieces: list[str] = []
    pos = 0
    for m in re.finditer(r"\{([^{}]+)\}", text):
        if m.start() > pos:
            pieces.append(lit(text[pos : m.start()]))
        pieces.append(f"coalesce(CAST(({m.group(1)}) AS VARCHAR), '?')")
        pos = m.end()
    if pos < len(text):
        pieces.append(lit(text[pos:]))
    return f"concat({', '.join(pieces)})" if pieces else "''"


def message_sql(field_name: str, value: str, text: str, edit_id: str) -> str:
    """'<file> row <n>: <field> '<value>' <text> [<edit id>]' as an SQL expression (`value`,
    `text` and `edit_id` are SQL expressions)."""
    return (
        f"concat(r._source_file, ' row ', CAST(r._source_row AS VARCHAR), ': ', {lit(field_name)},"
        f" ' ', coalesce('''' || {value} || '''', '(empty)'), ' ', {text}, ' [', {edit_id}, ']')"
    )


def ancestor_joins(table: TableDef, wanted: list[str]) -> list[tuple[str, str, str, str]]:
    """(alias, from_alias, fk column, parent key) joins reaching every wanted ancestor."""
    model = load_model()
    paths: dict[str, list[tuple[str, str, str, str]]] = {}

    def walk(tdef: TableDef, alias: str, path: list[tuple[str, str, str, str]]) -> None:
        for col, ref in tdef.foreign_keys.items():
            parent, pcol = ref.split(".")
            step = [*path, (parent, alias, col, pcol)]
            paths.setdefault(parent, step)
            walk(model.table(parent), parent, step)

    walk(table, "r", [])
    joins: list[tuple[str, str, str, str]] = []
    for name in wanted:
        for step in paths.get(name, []):
            if step not in joins:
                joins.append(step)
    return joins


@dataclass
class Check:
    """One rule applied to one field: SQL condition, the value and message text to report."""

    edit: Edit
    field: str
    value: str
    text: str
    where: str
    parents: list[str] = dataclasses.field(default_factory=list)  # `field` is a member here
    edit_id: str = ""  # SQL giving the edit id when it depends on the row (default: edit.id)

    @property
    def edit_id_sql(self) -> str:
        return self.edit_id or lit(self.edit.id)


@dataclass
class EditRun:
    """One run of every edit over the work tables of an ingest (see module docstring)."""

    con: duckdb.DuckDBPyConnection
    work: dict[str, str]
    today: date = field(default_factory=date.today)
    stored: bool = True  # whether the store's own tables exist (parents may live there)

    def run(self) -> None:
        """Evaluate every edit; results land in temp table `qr`."""
        self._setup()
        with _small_range_joins(self.con, self._reference_rows):
            self._run()

    def run_cross_table(self, name: str) -> None:
        """Only the edits of work table `name` that look at its parents, with its reference
        checks, into a fresh `qr`. For stored rows whose parent changed: their own values did
        not change, so their other edits would find what they found before. The caller makes
        the views eff_<ancestor> the joins read."""
        self._setup()
        tdef = load_model().table(name)
        rules = cross_table_rules(name)
        checks = [self._sql_check(e) for e in rules]
        checks += [self._orphan_check(col, ref) for col, ref in tdef.foreign_keys.items()]
        with _small_range_joins(self.con, self._reference_rows):
            self._run_checks(tdef, self.work[name], checks, [e.join for e in rules if e.join])

    def _run(self) -> None:
        model = load_model()
        for name, work in self.work.items():
            self._duplicates(model.table(name), work)
        self._effective_parents()
        # parents first: a table's orphan check needs its parents' errors complete
        for name in topological(list(self.work)):
            tdef = model.table(name)
            work = self.work[name]
            # every row-level rule of the table in one scan, joined once to its parents and to
            # the reference tables (left joins on non-overlapping ranges: one match at most);
            # the orphan check rides on the same parent join unless the store holds parents
            rules = [e for e in edits_by_check("sql") if e.table == name]
            checks = self._field_checks(tdef) + [self._sql_check(e) for e in rules]
            for parent in self._parents(tdef).values():
                self._effective_parent(parent)  # the parent's errors are final now
            stored = {p for p in self._parents(tdef).values() if self._stored_rows(p)}
            checks += [
                self._orphan_check(col, ref)
                for col, ref in tdef.foreign_keys.items()
                if ref.split(".")[0] not in stored
            ]
            self._run_checks(tdef, work, checks, [e.join for e in rules if e.join])
            for f in tdef.input_fields:
                if f.code_system:
                    self._code_check(tdef, f, work)
            for col, ref in tdef.foreign_keys.items():
                if ref.split(".")[0] in stored:
                    self._reference(tdef, col, ref)
        for edit in edits_by_check("no_valid_child"):
            self._no_valid_child(edit)

    def _no_valid_child(self, edit: Edit) -> None:
        """Parent rows of this ingest whose child rows here all failed, with no child stored:
        stored alone (a patient without a tumour), so flagged. Runs once every error is known."""
        key = edit.child_key()
        if key is None or edit.table not in self.work or edit.child not in self.work:
            return
        if not self._has_error(edit.child):
            return  # every child row is valid, so every parent with one has a valid one
        # (skipping saves a scan of both tables: 0.3 s CPU at 1M patients)
        assert edit.table and edit.child and edit.field and edit.message
        fk, pk = key
        child = q(self.work[edit.child])
        ok_child = (
            f"SELECT c.{q(fk)} FROM {child} c ANTI JOIN (SELECT _row FROM {RESULTS} WHERE "
            f"table_name = {lit(edit.child)} AND severity = 'error') e ON e._row = c._row"
        )
        where = (
            f"r.{q(pk)} IN (SELECT {q(fk)} FROM {child}) AND r.{q(pk)} NOT IN ({ok_child} "
            f"WHERE c.{q(fk)} IS NOT NULL) AND r._row NOT IN (SELECT _row FROM {RESULTS} "
            f"WHERE table_name = {lit(edit.table)} AND severity = 'error')"
        )  # a parent that fails itself is quarantined, not stored alone: no flag
        if self._stored_rows(edit.child):
            where += (
                f" AND r.{q(pk)} NOT IN (SELECT {q(fk)} FROM main.{q(edit.child)} "
                f"WHERE {q(fk)} IS NOT NULL)"
            )
        field = load_model().table(edit.table).field(edit.field)
        value = f"r.{q(raw_column(field))}"
        source = f"{q(self.work[edit.table])} AS r"
        self._insert(edit.table, edit, edit.field, value, lit(edit.message), source, where)

    # -- setup ------------------------------------------------------------------------------------
    _reference_rows: int = 0  # rows of the largest reference table (sizes its range joins)

    def _setup(self) -> None:
        for macro in _MACROS:
            self.con.execute(macro)
        for name, columns in _REFERENCES.items():
            cols = ", ".join(f"{c} {t}" for c, t in columns.items())
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE ref_{name} ({cols})")
            rows = [tuple(r[c] for c in columns) for r in reference_table(name)]
            self._reference_rows = max(self._reference_rows, len(rows))
            if rows:
                marks = ", ".join("?" for _ in columns)
                self.con.executemany(f"INSERT INTO ref_{name} VALUES ({marks})", rows)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {RESULTS} (table_name VARCHAR, _row BIGINT, "
            "edit_id VARCHAR, severity VARCHAR, field VARCHAR, value VARCHAR, message VARCHAR)"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE bad_codes (code_system VARCHAR, code VARCHAR, "
            "reason VARCHAR)"
        )

    def _insert(
        self,
        table: str,
        edit: Edit,
        field_name: str,
        value: str,
        text: str,
        source: str,
        where: str,
    ) -> None:
        self.con.execute(
            f"INSERT INTO {RESULTS} SELECT {lit(table)}, r._row, {lit(edit.id)}, "
            f"{lit(edit.severity)}, {lit(field_name)}, {value}, "
            f"{message_sql(field_name, value, text, lit(edit.id))} FROM {source} WHERE {where}"
        )

    # -- row-level checks ------------------------------------------------------------------------
    def _run_checks(self, tdef: TableDef, work: str, checks: list[Check], joins: list[str]) -> None:
        """Checks of the row's own values in one scan of the work table; those reading a parent
        or a reference table in a second, joined statement that carries only their columns
        (one joined statement for all cost twice as much: every column rode through the joins).
        """
        own = [c for c in checks if not c.parents and not c.edit.join]
        self._run_group(tdef, work, own, [])
        self._run_group(tdef, work, [c for c in checks if c not in own], joins)

    def _run_group(self, tdef: TableDef, work: str, checks: list[Check], joins: list[str]) -> None:
        """One statement for many checks: rows failing any condition are selected once and each
        failed check becomes one result row (a list of structs, unnested)."""
        if not checks:
            return
        parents = sorted({p for c in checks for p in c.parents})
        source = f"{q(work)} AS r"
        for alias, frm, col, pcol in ancestor_joins(tdef, parents):
            source += f" LEFT JOIN eff_{alias} AS {alias} ON {frm}.{q(col)} = {alias}.{q(pcol)}"
        for join in joins:
            source += f" LEFT JOIN {join}"
        items = ", ".join(
            f"CASE WHEN {c.where} THEN {{'edit_id': {c.edit_id_sql}, "
            f"'severity': {lit(c.edit.severity)}, 'field': {lit(c.field)}, "
            f"'value': CAST({c.value} AS VARCHAR), "
            f"'message': {message_sql(c.field, c.value, c.text, c.edit_id_sql)}}} END"
            for c in checks
        )
        failing = " OR ".join(f"({c.where})" for c in checks)
        sql = (
            f"INSERT INTO {RESULTS} SELECT {lit(tdef.name)}, _row, h.edit_id, h.severity, "
            f"h.field, h.value, h.message FROM (SELECT r._row AS _row, "
            f"unnest(list_filter([{items}], lambda x: x IS NOT NULL)) AS h "
            f"FROM {source} WHERE {failing})"
        )
        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            ids = ", ".join(c.edit.id for c in checks)
            raise RuntimeError(f"edits {ids} on {tdef.name}: invalid SQL: {exc}") from exc

    def _field_checks(self, tdef: TableDef) -> list[Check]:
        """The model-generated checks (required, type, allowed, range, dates) of a table."""
        keys = set(tdef.primary_key)
        checks: list[Check] = []
        for f in tdef.input_fields:
            raw = f"r.{q(raw_column(f))}"
            typed = f"r.{q(f.name)}"
            for edit in load_edits():
                where, text = self._field_rule(edit, tdef, f, raw, typed, keys)
                if where:
                    # a control character would make the message itself unreadable: escape it
                    value = _escaped(raw) if edit.check == "key_text" else raw
                    checks.append(Check(edit, f.name, value, text, where))
        return checks

    def _sql_check(self, edit: Edit) -> Check:
        assert edit.table and edit.field and edit.when and edit.message
        tdef = load_model().table(edit.table)
        value = f"r.{q(raw_column(tdef.field(edit.field)))}"
        return Check(edit, edit.field, value, template_sql(edit.message), edit.when, edit.parents())

    def _field_rule(
        self, edit: Edit, tdef: TableDef, f: FieldDef, raw: str, typed: str, keys: set[str]
    ) -> tuple[str, str]:
        """(WHERE condition, message SQL) of a model-generated edit for one field, or ('', '')."""
        if edit.check == "required" and (f.required or f.name in keys):
            return f"{raw} IS NULL", lit("is required")
        if edit.check == "key_text" and (f.name in keys or f.name in tdef.foreign_keys):
            code = f"printf('U+%04X', unicode(regexp_extract({raw}, {_CONTROL})))"
            return (
                f"regexp_matches({raw}, {_CONTROL})",
                f"concat('holds control character ', {code}, '; keys must be printable text')",
            )
        if edit.check == "type" and f.type != "string":
            return f"{raw} IS NOT NULL AND {typed} IS NULL", lit(f"is not {TYPE_WORDS[f.type]}")
        if edit.check == "allowed" and f.allowed:
            values = ", ".join(lit(v) for v in f.allowed)
            shown = ", ".join(str(v) for v in f.allowed)
            return f"{typed} NOT IN ({values})", lit(f"is not one of: {shown}")
        if edit.check == "range" and (f.min is not None or f.max is not None):
            lo = f"{typed} < {f.min!r}" if f.min is not None else "false"
            hi = f"{typed} > {f.max!r}" if f.max is not None else "false"
            return f"({lo} OR {hi})", lit(f"is outside the range {f.min} to {f.max}")
        if edit.check == "date_range" and f.type in ("date", "partial_date"):
            precision = f.name + "_precision"
            day = typed
            if f.type == "partial_date" and precision in tdef.field_names:
                day = f"ccdp_earliest_birth({typed}, r.{q(precision)})"
            today = self.today.isoformat()
            return (
                f"({typed} < DATE '{MIN_DATE}' OR {day} > DATE '{today}')",
                lit(f"is before {MIN_DATE} or after the ingest date {today}"),
            )
        return "", ""

    def _code_check(self, tdef: TableDef, f: FieldDef, work: str) -> None:
        system = f.code_system or ""
        edits = [e for e in edits_by_check("code") if e.code_system == system]
        if not edits:
            return
        values = [
            row[0]
            for row in self.con.execute(
                f"SELECT DISTINCT {q(f.name)} FROM {q(work)} WHERE {q(f.name)} IS NOT NULL"
            ).fetchall()
        ]
        bad = invalid_codes(system, values)
        self.con.execute("DELETE FROM bad_codes WHERE code_system = ?", [system])
        if bad:
            self.con.executemany(
                "INSERT INTO bad_codes VALUES (?, ?, ?)", [(system, c, r) for c, r in bad.items()]
            )
        src = (
            f"{q(work)} AS r JOIN bad_codes b ON b.code_system = {lit(system)} "
            f"AND b.code = r.{q(f.name)}"
        )
        self._insert(tdef.name, edits[0], f.name, f"r.{q(f.name)}", "b.reason", src, "true")

    # -- keys -------------------------------------------------------------------------------------
    def _duplicates(self, tdef: TableDef, work: str) -> None:
        """Rows whose key an earlier row already has; keys are grouped first, so the window
        ranking runs only over the (usually absent) duplicated keys. Identical rows: the first
        is kept. Rows that differ in some field: every one is quarantined, naming the values
        (`key.conflict` for the first), since nothing says which one is right."""
        edit, conflict = edits_by_check("duplicate_key")[:2]
        cols = [q(raw_column(tdef.field(k))) for k in tdef.primary_key]
        keys = ", ".join(cols)
        on = " AND ".join(f"w.{c} IS NOT DISTINCT FROM d.{c}" for c in cols)
        # the duplicated keys, found by one aggregate; usually none, and then nothing more runs
        dup_keys = f"dup_keys_{tdef.name}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {q(dup_keys)} AS SELECT {keys} FROM {q(work)} "
            "GROUP BY ALL HAVING count(*) > 1"
        )
        if not any_row(self.con, q(dup_keys)):
            self.con.execute(f"DROP TABLE {q(dup_keys)}")
            return
        # only the rows of duplicated keys are compared
        dups = f"(SELECT w.* FROM {q(work)} w SEMI JOIN {q(dup_keys)} d ON {on})"
        ranked = (
            f"(SELECT w.*, d._conflict, row_number() OVER win AS _rank, first_value("
            f"w._source_file) OVER win AS _f1, first_value(w._source_row) OVER win AS _r1 FROM "
            f"{dups} w JOIN (SELECT {keys}, {_conflicts_sql(tdef)} AS _conflict FROM {dups} "
            f"GROUP BY ALL) d ON {on} "
            f"WINDOW win AS (PARTITION BY {', '.join('w.' + c for c in cols)} ORDER BY w._row)"
            ") AS r"
        )
        text = (
            "CASE WHEN r._conflict <> '' THEN concat('duplicate key with conflicting values (', "
            "r._conflict, '); every row with this key is quarantined') ELSE "
            "concat('duplicates the key of ', r._f1, ' row ', CAST(r._r1 AS VARCHAR)) END"
        )
        shown = "/".join(tdef.primary_key)
        self._insert(tdef.name, edit, shown, key_expr(tdef), text, ranked, "r._rank > 1")
        self._insert(
            tdef.name,
            conflict,
            shown,
            key_expr(tdef),
            text,
            ranked,
            "r._rank = 1 AND r._conflict <> ''",
        )
        self.con.execute(f"DROP TABLE {q(dup_keys)}")

    def _effective_parents(self) -> None:
        """View eff_<parent> for every parent a work table reaches (see `_effective_parent`)."""
        model = load_model()
        parents = {
            ref.split(".")[0]
            for name in self.work
            for t in [name, *self._ancestors(name)]
            for ref in model.table(t).foreign_keys.values()
        }
        for parent in sorted(parents):
            self._effective_parent(parent)

    def _effective_parent(self, parent: str) -> None:
        """View eff_<parent>: the parent rows this ingest brings (first of duplicates), plus
        stored rows it does not replace, so cross-table edits see the parent wherever it lives.
        `_ok` says the row has no error; it is exact once the parent's own checks have run
        (the view is made again then, and is a constant when the parent has no error)."""
        tdef = load_model().table(parent)
        cols = [f.name for f in tdef.fields if not f.derived or f.name.endswith("_precision")]
        sel = ", ".join(f"r.{q(c)}" for c in cols)
        parts = []
        if parent in self.work:
            rows = f"SELECT {sel}, true AS _ok FROM {q(self.work[parent])} r"
            if self._has_error(parent):
                rows = (
                    f"SELECT {sel}, e._row IS NULL AS _ok FROM {q(self.work[parent])} r "
                    f"LEFT JOIN (SELECT DISTINCT _row FROM {RESULTS} WHERE table_name = "
                    f"{lit(parent)} AND severity = 'error') e ON e._row = r._row"
                )
            if self._has_result(parent, "key.duplicate"):
                rows += (
                    f" ANTI JOIN (SELECT _row FROM {RESULTS} WHERE table_name = "
                    f"{lit(parent)} AND edit_id = 'key.duplicate') d ON d._row = r._row"
                )
            parts.append(rows)
        if self._stored_rows(parent):
            anti = ""
            if parent in self.work:
                on = " AND ".join(f"w.{q(k)} = r.{q(k)}" for k in tdef.primary_key)
                anti = f" ANTI JOIN {q(self.work[parent])} w ON {on}"
            parts.append(f"SELECT {sel}, true AS _ok FROM main.{q(parent)} r{anti}")
        empty = f"SELECT {', '.join(q(c) for c in cols)}, true AS _ok WHERE false"
        body = " UNION ALL ".join(parts) if parts else empty
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW eff_{parent} AS {body}")

    def _has_error(self, table: str) -> bool:
        return any_row(self.con, RESULTS, f"table_name = {lit(table)} AND severity = 'error'")

    def _stored_rows(self, table: str) -> bool:
        """Whether the store already holds rows of `table` (else its part of a union is skipped)."""
        return self.stored and any_row(self.con, f"main.{q(table)}")

    def _has_result(self, table: str, edit_id: str) -> bool:
        return any_row(self.con, RESULTS, f"table_name = {lit(table)} AND edit_id = {lit(edit_id)}")

    def _ancestors(self, name: str) -> list[str]:
        tdef = load_model().table(name)
        out: list[str] = []
        for ref in tdef.foreign_keys.values():
            parent = ref.split(".")[0]
            out += [parent, *self._ancestors(parent)]
        return out

    @staticmethod
    def _parents(tdef: TableDef) -> dict[str, str]:
        """Foreign-key column -> parent table."""
        return {col: ref.split(".")[0] for col, ref in tdef.foreign_keys.items()}

    @staticmethod
    def _orphan_sql(parent: str, missing: str) -> tuple[str, str]:
        """(edit id SQL, message SQL) of a reference check, given SQL true when the parent key
        is unknown (otherwise the parent is known but quarantined)."""
        orphan = edits_by_check("orphan")[0]
        held = edits_by_check("parent_quarantined")[0]
        absent = f"refers to a {parent} that is neither in this ingest nor in the store"
        quarantined = f"refers to a {parent} that is quarantined in this ingest"
        text = f"CASE WHEN {missing} THEN {lit(absent)} ELSE {lit(quarantined)} END"
        edit_id = f"CASE WHEN {missing} THEN {lit(orphan.id)} ELSE {lit(held.id)} END"
        return edit_id, text

    def _orphan_check(self, col: str, ref: str) -> Check:
        """The reference check of one foreign key as a row-level check over the join to the
        parent's effective rows (alias = parent table): the parent must be known and have no
        error, so a child of a quarantined parent is itself quarantined."""
        parent, pcol = ref.split(".")
        missing = f"{parent}.{q(pcol)} IS NULL"
        edit_id, text = self._orphan_sql(parent, missing)
        where = f"r.{q(col)} IS NOT NULL AND ({missing} OR NOT {parent}._ok)"
        orphan = edits_by_check("orphan")[0]
        return Check(orphan, col, f"r.{q(col)}", text, where, [parent], edit_id)

    def _reference(self, tdef: TableDef, col: str, ref: str) -> None:
        """The reference check of one foreign key against the parent keys of this ingest and of
        the store (used when the store holds rows of the parent)."""
        parent, pcol = ref.split(".")
        status = self._parent_status(parent, pcol)
        edit_id, text = self._orphan_sql(parent, "p.k IS NULL")
        value = f"r.{q(col)}"
        self.con.execute(
            f"INSERT INTO {RESULTS} SELECT {lit(tdef.name)}, r._row, {edit_id}, 'error', "
            f"{lit(col)}, {value}, {message_sql(col, value, text, edit_id)}"
            f" FROM {q(self.work[tdef.name])} AS r LEFT JOIN {status} p ON p.k = r.{q(col)} "
            f"WHERE r.{q(col)} IS NOT NULL AND (p.k IS NULL OR NOT p.ok)"
        )

    def _parent_status(self, parent: str, pcol: str) -> str:
        """Temp table (k, ok) of the parent keys this ingest or the store knows; ok when the key
        is stored or arrives in a row without errors (computed after the parent's own checks)."""
        name = f"status_{parent}"
        parts = []
        if parent in self.work:
            parts.append(
                f"SELECT {q(pcol)} AS k, (e._row IS NULL) AS ok FROM {q(self.work[parent])} w "
                f"LEFT JOIN (SELECT DISTINCT _row FROM {RESULTS} WHERE table_name = {lit(parent)}"
                " AND severity = 'error') e ON e._row = w._row"
            )
        stored = self._stored_rows(parent)
        if stored:
            parts.append(f"SELECT {q(pcol)} AS k, true AS ok FROM main.{q(parent)}")
        body = " UNION ALL ".join(parts) if parts else "SELECT NULL::VARCHAR AS k, true AS ok"
        unique = not stored and not self._has_result(parent, "key.duplicate")
        # keys are unique already when only this ingest (without duplicates) brings them
        select = "SELECT k, ok" if unique else "SELECT k, bool_or(ok) AS ok"
        group = "" if unique else " GROUP BY k"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS {select} FROM ({body}) "
            f"WHERE k IS NOT NULL{group}"
        )
        return name


@contextmanager
def _small_range_joins(con: duckdb.DuckDBPyConnection, rows: int) -> Iterator[None]:
    """Range joins to the reference tables (a few rows each) as nested loops: DuckDB otherwise
    picks a piecewise merge join for tables of 5 rows or more, which sorts the whole work table
    (1M tumours: ~1 s CPU per joined reference table, against ~0.1 s for the loop). The
    threshold is strict, hence `rows + 1`; only non-equality joins are affected."""
    setting = "nested_loop_join_threshold"
    (before,) = con.execute(f"SELECT current_setting('{setting}')").fetchall()[0]
    con.execute(f"SET {setting} = {max(int(before), rows + 1)}")
    try:
        yield
    finally:
        con.execute(f"SET {setting} = {int(before)}")


def cross_table_rules(table: str) -> list[Edit]:
    """The sql edits of `table` that read a parent's values."""
    return [e for e in edits_by_check("sql") if e.table == table and e.parents()]


def cross_table_edit_ids(table: str) -> list[str]:
    """Ids of the edits whose outcome for a row of `table` depends on its parents' values."""
    ids = [e.id for e in cross_table_rules(table)]
    if load_model().table(table).foreign_keys:
        ids += [e.id for e in (*edits_by_check("orphan"), *edits_by_check("parent_quarantined"))]
    return ids


def topological(tables: list[str]) -> list[str]:
    """Tables ordered parents first (by the model's foreign keys)."""
    model = load_model()
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for ref in model.table(name).foreign_keys.values():
            parent = ref.split(".")[0]
            if parent in tables:
                visit(parent)
        done.append(name)

    for t in model.table_names:
        if t in tables:
            visit(t)
    return done

"""The ingest core every source goes through: text in, typed and checked rows out, nothing lost.

Sources arrive as text (native CSVs read by DuckDB, or DataFrames from a mapping spec) with the
model's field names plus `_source_file` and `_source_row`. In ONE store transaction the pipeline
types the values, runs every quality edit (ccdp.quality), upserts the accepted rows by primary key,
puts failing rows in `quarantine` with every reason, and records warnings in `quality_flag`. Any
failure rolls everything back. All work is set-based DuckDB SQL over temp tables.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ccdp.ingest.convert import AMBIGUOUS_DATE_PREFIX, AS_WRITTEN_PREFIX, UNREAD_DATE_PREFIX
from ccdp.ingest.derive import ICCC_FIELDS, ICCC_TABLE, build_iccc_lookup
from ccdp.ingest.errors import IngestError
from ccdp.ingest.native import (
    IDENTIFIER_PREFIX,
    csv_error_text,
    native_csv_error,
    native_files,
    native_identifiers,
)
from ccdp.ingest.pseudonym import pseudonym_sql
from ccdp.ingest.recheck import Recheck
from ccdp.model import FieldDef, TableDef, load_model
from ccdp.quality.edits import edit, edits_by_check
from ccdp.quality.engine import RESULTS, EditRun, key_expr, message_sql, topological
from ccdp.store import NodeStore
from ccdp.store.config import pseudonym_key
from ccdp.store.typed import SOURCE_SUFFIX, any_row, clean_text, lit, q, raw_column, work_select

# frame columns beside the fields that ingest carries to its messages and quarantine
SIDE_PREFIXES = (AMBIGUOUS_DATE_PREFIX, UNREAD_DATE_PREFIX, AS_WRITTEN_PREFIX)

SYSTEM_FRAME_COLUMNS = ("_source_file", "_source_row")

IdentifiersHook = Callable[[duckdb.DuckDBPyConnection, pd.DataFrame], None]
"""Called inside ingest's transaction with the identifiers of the stored patients, keyed by their
stored (pseudonymised) key: the linkage encoder (a higher floor) passes one and writes its
encodings in the same transaction. Ingest itself never stores an identifier."""


class TableCounts(BaseModel):
    """What happened to one table's rows: those of this source (rows_read = accepted +
    quarantined), and stored rows checked again because a parent changed."""

    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    flagged: int = 0
    rechecked: int = Field(
        0,
        description="stored rows (not from this source) whose cross-table edits ran again "
        "because this ingest changed their parent or an ancestor",
    )
    requarantined: int = Field(
        0, description="rechecked rows moved from the store to quarantine (also in rechecked)"
    )


class IngestReport(BaseModel):
    """Outcome of one ingest; rows_read = accepted + quarantined, per table and in total."""

    ingest_id: str
    source: str
    store: str
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    flagged: int = Field(0, description="accepted rows carrying at least one warning")
    rechecked: int = Field(0, description="stored child rows checked again (sum over tables)")
    requarantined: int = Field(0, description="rechecked rows moved to quarantine (sum)")
    pseudonymised: bool = False
    tables: dict[str, TableCounts] = Field(default_factory=dict)
    edits: dict[str, int] = Field(default_factory=dict, description="failures per edit id")
    absent_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per table, the optional input fields the source left out (stored as null), "
        "so that a registry that does not record a field is visible, not silent",
    )

    def summary(self) -> dict[str, object]:
        """The machine contract of `ccdp ingest --json`: every field above; `tables` has an
        entry per table of the source, and per table whose stored rows were rechecked."""
        return self.model_dump(mode="json")


@dataclass
class RawSource:
    """One table's text input: the relation to read it from and where its rows came from.

    `provenance` gives `_row`, `_source_file`, `_source_row` as SQL over the relation; when it
    is None (native CSVs) they come from the work table's rowid, which is the row's position in
    the file because the work table is filled in file order outside any transaction.
    """

    table: str
    columns: set[str]
    relation: str
    name: str
    identifiers: bool
    provenance: dict[str, str] | None = None
    source_file: str = ""
    path: Path | None = None  # the native CSV DuckDB reads (its errors are located in it)
    register: Callable[[duckdb.DuckDBPyConnection], None] | None = None
    cleanup: Callable[[duckdb.DuckDBPyConnection], None] | None = None


# -- sources ---------------------------------------------------------------------------------
def _frame_sources(
    frames: dict[str, pd.DataFrame], source: str, absent: dict[str, list[str]]
) -> list[RawSource]:
    """Check DataFrames against the model and wrap them as sources (registered at load time);
    `absent` fields count as left out even if the frame has an empty column for them."""
    model = load_model()
    out: list[RawSource] = []
    for table, frame in frames.items():
        if table not in model.tables:
            raise IngestError(
                f"{source}: unknown table {table!r} (tables: {', '.join(model.table_names)})"
            )
        tdef = model.table(table)
        known = {f.name for f in tdef.fields} | set(SYSTEM_FRAME_COLUMNS)
        for col in frame.columns:
            if str(col) not in known and not str(col).startswith(
                (IDENTIFIER_PREFIX, *SIDE_PREFIXES)
            ):
                raise IngestError(f"{source}: table {table} has unknown column {col!r}")
        df = frame.reset_index(drop=True).copy(deep=False)
        if "_source_file" not in df.columns:
            df["_source_file"] = f"{source}/{table}"
        if "_source_row" not in df.columns:
            df["_source_row"] = np.arange(1, len(df) + 1)
        df["_row"] = np.arange(1, len(df) + 1, dtype="int64")
        view = f"frame_{table}"

        def register(con: duckdb.DuckDBPyConnection, df: pd.DataFrame = df, v: str = view) -> None:
            con.register(v, df)

        def cleanup(con: duckdb.DuckDBPyConnection, v: str = view) -> None:
            with suppress(duckdb.Error):
                con.unregister(v)

        out.append(
            RawSource(
                table=table,
                columns={str(c) for c in df.columns} - set(absent.get(table, [])),
                relation=q(view),
                name=f"{source}: table {table}",
                identifiers=any(str(c).startswith(IDENTIFIER_PREFIX) for c in df.columns),
                provenance={
                    "_row": "src._row",
                    "_source_file": "CAST(src._source_file AS VARCHAR)",
                    "_source_row": "CAST(src._source_row AS INTEGER)",
                    # a date the other day/month order reads differently: flagged after the edits;
                    # why a date no declared format reads is no date: said in its message;
                    # a date as the site wrote it: kept with the row if quarantined
                    **{
                        str(c): f"CAST(src.{q(str(c))} AS VARCHAR)"
                        for c in df.columns
                        if str(c).startswith(SIDE_PREFIXES)
                    },
                },
                register=register,
                cleanup=cleanup,
            )
        )
    return out


def _native_sources(folder: str | Path) -> list[RawSource]:
    """Native CSVs, parsed by DuckDB straight into the work tables (no pandas on the way); an
    `identifiers.csv` beside them means direct identifiers: every identifier is pseudonymised."""
    identified = native_identifiers(folder) is not None
    return [
        RawSource(
            table=table,
            columns=set(native.kept_columns),
            relation=native.read_csv_sql(),
            name=native.source_name,
            identifiers=identified
            or any(c.startswith(IDENTIFIER_PREFIX) for c in native.kept_columns),
            source_file=native.source_name,
            path=native.path,
        )
        for table, native in native_files(folder).items()
    ]


# -- public entry points -------------------------------------------------------------------------
def ingest_frames(
    store_path: str | Path,
    frames: dict[str, pd.DataFrame],
    source: str,
    *,
    progress: bool = True,
    today: date | None = None,
    absent_columns: dict[str, list[str]] | None = None,
    on_identifiers: IdentifiersHook | None = None,
) -> IngestReport:
    """Ingest text frames (native canonical form, `_source_file`/`_source_row` columns) into the
    store; `_identifier_*` columns trigger pseudonymisation and are never stored (but are handed,
    with the patient's birth date and sex, to `on_identifiers`: see IdentifiersHook).

    `absent_columns` (by default those `apply_mapping` found missing from the export) are
    fields the source does not record: stored as null and listed in the report."""
    if absent_columns is None:
        absent_columns = getattr(frames, "absent_columns", None) or {}
    sources = _frame_sources(frames, source, absent_columns)
    ids = _frame_identifiers(frames) if on_identifiers is not None else None
    hook = None if ids is None or on_identifiers is None else (ids, on_identifiers)
    return _ingest(store_path, sources, source, progress, today, hook)


def _frame_identifiers(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The patient frame's direct identifiers with its birth date and sex, as identifiers.csv
    names them; None without `_identifier_*` columns."""
    patient = frames.get("patient")
    if patient is None:
        return None
    ids = [c for c in patient.columns if str(c).startswith(IDENTIFIER_PREFIX)]
    if not ids:
        return None
    keep = ["patient_id", *[c for c in ("birth_date", "sex") if c in patient.columns], *ids]
    return patient[keep].rename(columns={c: c.removeprefix(IDENTIFIER_PREFIX) for c in ids})


def ingest_native(
    store_path: str | Path,
    folder: str | Path,
    *,
    progress: bool = True,
    today: date | None = None,
    on_identifiers: IdentifiersHook | None = None,
) -> IngestReport:
    """Ingest a native-layout folder; same result as `ingest_frames(read_native_folder(...))`,
    without holding the data in pandas. With `identifiers.csv` in the folder, `on_identifiers`
    is handed the stored patients' identifiers (see IdentifiersHook)."""
    ids = native_identifiers(folder) if on_identifiers is not None else None
    hook = None if ids is None or on_identifiers is None else (ids, on_identifiers)
    return _ingest(store_path, _native_sources(folder), str(folder), progress, today, hook)


def identified_patients(
    con: duckdb.DuckDBPyConnection, ids: Path | pd.DataFrame, key: bytes | None
) -> pd.DataFrame:
    """The rows of an `identifiers.csv` (or of a frame of the same columns) whose patient the
    store holds, `patient_id` replaced by the stored key exactly as ingest computes it (cleaned,
    then pseudonymised), all as text."""
    raw = clean_text("i.patient_id")
    stored = pseudonym_sql(key).format(raw=raw) if key is not None else raw
    if isinstance(ids, pd.DataFrame):
        con.register("_ccdp_identifiers", ids.astype(object).where(ids.notna(), None))
        relation = "_ccdp_identifiers"
    else:
        relation = f"read_csv({lit(str(ids))}, header = true, all_varchar = true)"
    try:
        return con.execute(
            f"SELECT * FROM (SELECT DISTINCT ON (patient_id) {stored} AS patient_id, "
            f"i.* EXCLUDE (patient_id) FROM {relation} i) "
            "WHERE patient_id IN (SELECT patient_id FROM patient)"
        ).df()
    finally:
        if isinstance(ids, pd.DataFrame):
            con.unregister("_ccdp_identifiers")


# -- the transaction -------------------------------------------------------------------------------
@contextmanager
def _steps(enabled: bool) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _msg: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("ingest")

        def step(message: str) -> None:
            bar.update(task, description=message)

        yield step


def _ingest(
    store_path: str | Path,
    sources: list[RawSource],
    source: str,
    progress: bool,
    today: date | None,
    hook: tuple[Path | pd.DataFrame, IdentifiersHook] | None = None,
) -> IngestReport:
    path = Path(store_path)
    created = not path.exists()
    # the help promises the store is created if absent: its folder too (deepest first, so a
    # failed first ingest can remove what it made)
    new_dirs = [d for d in path.parents if not d.exists()]
    if new_dirs:
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise IngestError(f"cannot create the folder of node store {path}: {exc}") from exc
    ingest_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    report = IngestReport(ingest_id=ingest_id, source=source, store=str(path))
    key = pseudonym_key(path) if any(s.identifiers for s in sources) else None
    report.pseudonymised = key is not None
    try:
        with NodeStore(path) as store, _steps(progress) as step:
            store.create()
            started = datetime.now(UTC).replace(tzinfo=None)
            # text -> typed work tables: temp tables only, so the store is untouched if it fails
            # (and outside the transaction, where DuckDB's rowid is the row's position in the file)
            work = _load_work(store.con, sources, key, step)
            report.absent_columns = _absent_columns(sources)
            # from here on row order is carried by _row, so DuckDB may parallelise freely
            store.con.execute("SET preserve_insertion_order = false")
            day = today or date.today()
            with store.transaction() as con:
                step("running quality edits")
                EditRun(con, work, today=day).run()
                _flag_ambiguous_dates(con, sources, work)
                _explain_unread_dates(con, sources, work)
                # before the upsert replaces them: which stored rows this ingest changes
                recheck = Recheck.find(con, work, ingest_id, day)
                step("writing accepted rows and quarantine")
                with single_writer(con):
                    _write(con, work, ingest_id, report)
                if recheck is not None:
                    step("checking again the stored children of changed rows")
                    _recheck(con, recheck, ingest_id, report)
                if hook is not None:
                    step("encoding identifiers for record linkage")
                    hook[1](con, identified_patients(con, hook[0], key))
                _log(con, report, started)
    except BaseException:
        if created:
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
            for folder in new_dirs:
                with suppress(OSError):  # not empty (e.g. the node config): keep it
                    folder.rmdir()
        raise
    return report


@contextmanager
def single_writer(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One DuckDB thread while the accepted rows are written into the store file.

    Two threads each compress their own row groups and wait on each other: writing 1M patients
    cost 8.1 s CPU that way on a busy machine, 6.7 s with one thread (5.8 s / 5.3 s at a lower
    load), in fuller row groups (a slightly smaller file). Reads and edits keep every thread."""
    (threads,) = con.execute("SELECT current_setting('threads')").fetchall()[0]
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        # an aborted transaction refuses SET: then the caller rolls back and closes the store
        with suppress(duckdb.TransactionException):
            con.execute(f"SET threads = {int(threads)}")


def _flag_ambiguous_dates(
    con: duckdb.DuckDBPyConnection, sources: list[RawSource], work: dict[str, str]
) -> None:
    """A warning per date the mapping read in one day/month order that the other order reads
    as another date, with no other value of the field showing the order (one INSERT a field)."""
    rule = edit("date.ambiguous_order")
    for s in sources:
        for col in sorted(c for c in s.columns if c.startswith(AMBIGUOUS_DATE_PREFIX)):
            if col.endswith("__other"):
                continue
            name = col.removeprefix(AMBIGUOUS_DATE_PREFIX)
            value = f"r.{q(col)}"
            read = f"r.{q(raw_column(load_model().table(s.table).field(name)))}"
            note = "; no other value of the field shows which order the site writes: check it"
            text = (
                f"concat('is read as ', {read}, ', but in the other day/month order it is ', "
                f"r.{q(col + '__other')}, {lit(note)})"
            )
            con.execute(
                f"INSERT INTO {RESULTS} SELECT {lit(s.table)}, r._row, {lit(rule.id)}, "
                f"{lit(rule.severity)}, {lit(name)}, {value}, "
                f"{message_sql(name, value, text, lit(rule.id))} FROM {q(work[s.table])} r "
                f"WHERE {value} IS NOT NULL"
            )


def _explain_unread_dates(
    con: duckdb.DuckDBPyConnection, sources: list[RawSource], work: dict[str, str]
) -> None:
    """The type edit's message for a date no declared format reads says why, in the source's
    own format ('31 February 2012 does not exist (declared date format %d/%m/%Y)')."""
    rule = edit("type")
    for s in sources:
        for col in sorted(c for c in s.columns if c.startswith(UNREAD_DATE_PREFIX)):
            name = col.removeprefix(UNREAD_DATE_PREFIX)
            read = f"r.{q(raw_column(load_model().table(s.table).field(name)))}"
            message = message_sql(name, read, f"r.{q(col)}", lit(rule.id))
            con.execute(
                f"UPDATE {RESULTS} AS x SET message = {message} FROM {q(work[s.table])} r "
                f"WHERE x.table_name = {lit(s.table)} AND x.edit_id = {lit(rule.id)} AND "
                f"x.field = {lit(name)} AND x._row = r._row AND r.{q(col)} IS NOT NULL"
            )


def _absent_columns(sources: list[RawSource]) -> dict[str, list[str]]:
    """Input fields each source table does not carry, in model order (only tables with some)."""
    model = load_model()
    absent: dict[str, list[str]] = {}
    for s in sources:
        missing = [f.name for f in model.table(s.table).input_fields if f.name not in s.columns]
        if missing:
            absent[s.table] = missing
    return absent


def _load_work(
    con: duckdb.DuckDBPyConnection,
    sources: list[RawSource],
    key: bytes | None,
    step: Callable[[str], None],
) -> dict[str, str]:
    """Materialise each source, typed, as temp table `w_<table>` in one pass; returns the
    relation edits and writes read for each table (the table, or a view adding provenance)."""
    model = load_model()
    work: dict[str, str] = {}
    for s in sources:
        step(f"reading {s.table}")
        tdef = model.table(s.table)
        if s.register:
            s.register(con)
        # every key built from site values (a tumour id may be a dossier number), with the same
        # HMAC everywhere, so that a foreign key still meets the key it refers to
        replace = (
            {f: pseudonym_sql(key) for f in tdef.identifier_fields} if key is not None else None
        )
        sql = work_select(
            tdef, s.relation, s.columns, provenance=s.provenance, replace_raw=replace or None
        )
        name = f"w_{s.table}"
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {q(name)} AS {sql}")
        except duckdb.Error as exc:
            if s.path is not None:
                raise IngestError(native_csv_error(s.path, s.name, str(exc))) from exc
            raise IngestError(f"{s.name}: {csv_error_text(str(exc))}") from exc
        finally:
            if s.cleanup:
                s.cleanup(con)
        if s.provenance is None:
            view = f"v_{s.table}"
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {q(view)} AS SELECT rowid + 1 AS _row, "
                f"{lit(s.source_file)} AS _source_file, CAST(rowid + 1 AS INTEGER) AS _source_row, "
                f"* FROM {q(name)}"
            )
            name = view
        work[s.table] = name
    return work


def _insert_columns(tdef: TableDef, iccc: bool) -> tuple[list[str], list[str]]:
    """(target columns, SELECT expressions over work row `r` and ICCC lookup `i`)."""
    targets: list[str] = []
    exprs: list[str] = []
    for f in tdef.fields:
        if not f.derived or f.name.endswith("_precision"):
            targets.append(f.name)
            exprs.append(f"r.{q(f.name)}")
        elif f.name in ICCC_FIELDS and iccc:
            targets.append(f.name)
            exprs.append(f"i.{q(f.name)}")
    return targets, exprs


def _write(
    con: duckdb.DuckDBPyConnection, work: dict[str, str], ingest_id: str, report: IngestReport
) -> None:
    """Upsert accepted rows, replace quarantine and flags for the keys seen, count outcomes."""
    model = load_model()
    for name in topological(list(work)):
        tdef = model.table(name)
        w = q(work[name])
        err = f"err_{name}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {err} AS SELECT DISTINCT _row FROM {RESULTS} "
            f"WHERE table_name = {lit(name)} AND severity = 'error'"
        )
        accepted = w  # every row, unless some failed an error-level edit
        if any_row(con, err):
            accepted = f"(SELECT r.* FROM {w} r ANTI JOIN {err} e ON r._row = e._row)"
        key = key_expr(tdef)
        # upsert: delete the stored rows whose key comes back, then insert
        on = " AND ".join(f"t.{q(k)} IS NOT DISTINCT FROM a.{q(k)}" for k in tdef.primary_key)
        keys = ", ".join(q(k) for k in tdef.primary_key)
        if any_row(con, f"main.{q(name)}"):
            con.execute(
                f"DELETE FROM main.{q(name)} t USING (SELECT {keys} FROM {accepted}) a WHERE {on}"
            )
        iccc = name == "tumour" and build_iccc_lookup(con, work[name])
        targets, exprs = _insert_columns(tdef, iccc)
        joins = ""
        if iccc:
            joins = (
                f" LEFT JOIN {ICCC_TABLE} i ON i.morphology = r.morphology "
                "AND i.topography = r.topography AND i.behaviour = r.behaviour"
            )
        cols = ", ".join(q(c) for c in [*targets, "_source_file", "_source_row", "_ingest_id"])
        con.execute(
            f"INSERT INTO main.{q(name)} ({cols}) SELECT {', '.join(exprs)}, r._source_file, "
            f"r._source_row, {lit(ingest_id)} FROM {accepted} r{joins}"
        )
        _write_quarantine(
            con, tdef, w, err, key, ingest_id, source_key=_source_key(tdef, report.pseudonymised)
        )
        _write_flags(con, tdef, w, err, key, ingest_id)
        _clear_parent_flags(con, name)
        counts = con.execute(
            f"SELECT (SELECT count(*) FROM {w}), (SELECT count(*) FROM {err}), "
            f"(SELECT count(DISTINCT q._row) FROM {RESULTS} q ANTI JOIN {err} e ON q._row = e._row"
            f" WHERE q.table_name = {lit(name)} AND q.severity = 'warning')"
        ).fetchall()[0]
        rows_read, quarantined, flagged = (int(c) for c in counts)
        report.tables[name] = TableCounts(
            rows_read=rows_read,
            accepted=rows_read - quarantined,
            quarantined=quarantined,
            flagged=flagged,
        )
        con.execute(f"DROP TABLE {err}")
    report.rows_read = sum(t.rows_read for t in report.tables.values())
    report.accepted = sum(t.accepted for t in report.tables.values())
    report.quarantined = sum(t.quarantined for t in report.tables.values())
    report.flagged = sum(t.flagged for t in report.tables.values())
    report.edits = {
        edit_id: int(n)
        for edit_id, n in con.execute(
            f"SELECT edit_id, count(*) FROM {RESULTS} GROUP BY edit_id ORDER BY edit_id"
        ).fetchall()
    }


def _recheck(
    con: duckdb.DuckDBPyConnection, recheck: Recheck, ingest_id: str, report: IngestReport
) -> None:
    """Stored descendants of changed rows, table by table down the model: flags rewritten,
    rows now failing an error-level edit moved to quarantine with every reason."""
    model = load_model()
    for name in recheck.tables():
        rows = recheck.stored_work(name)
        if rows is None:
            continue
        tdef = model.table(name)
        key = key_expr(tdef)
        err = recheck.check(name)
        failed = recheck.failed(name, err)
        if failed is not None:
            _write_quarantine(con, tdef, failed, err, key, ingest_id, replace_own=False)
            recheck.remove(name)
        _write_flags(con, tdef, rows, err, key, ingest_id)
        counts = report.tables.setdefault(name, TableCounts())
        counts.rechecked = recheck.count(rows)
        counts.requarantined = recheck.count(failed) if failed is not None else 0
    report.rechecked = sum(t.rechecked for t in report.tables.values())
    report.requarantined = sum(t.requarantined for t in report.tables.values())


def _source_key(tdef: TableDef, pseudonymised: bool) -> str:
    """SQL of a work row's key as the site wrote it (before any pseudonym), for quarantine."""
    if not pseudonymised or not set(tdef.primary_key) & set(tdef.identifier_fields):
        return key_expr(tdef)

    def column(f: FieldDef) -> str:
        return f.name + SOURCE_SUFFIX if f.identifier else raw_column(f)

    return key_expr(tdef, column=column)


def _write_quarantine(
    con: duckdb.DuckDBPyConnection,
    tdef: TableDef,
    w: str,
    err: str,
    key: str,
    ingest_id: str,
    *,
    replace_own: bool = True,
    source_key: str = "NULL",
) -> None:
    """Quarantine every failing row with its raw text and all its reasons.

    Open entries for the keys or source rows of this ingest are settled first: those of rows
    failing again are replaced (re-ingest is idempotent), those of rows now accepted are marked
    resolved by this ingest and kept, so the data manager sees what her fixes cleared. Entries
    of this very ingest are left alone unless `replace_own` (a stored row re-checked must not
    drop the entry of the new version of it that this ingest just quarantined). `source_key` is
    SQL of the key as the site wrote it (NULL for stored rows, whose source text is gone)."""
    name = tdef.name
    if any_row(con, "quarantine", f"table_name = {lit(name)} AND resolved_at IS NULL"):
        own = "" if replace_own else f"q.ingest_id <> {lit(ingest_id)} AND "
        open_entry = f"q.table_name = {lit(name)} AND q.resolved_at IS NULL AND {own}"

        def same_row(rows: str) -> str:
            return (
                f"(q.record_key IN (SELECT {key} FROM {rows} r WHERE {key} <> '') OR EXISTS "
                f"(SELECT 1 FROM {rows} r WHERE r._source_file = q.source_file "
                "AND r._source_row = q.source_row))"
            )

        failing = f"(SELECT r.* FROM {w} r SEMI JOIN {err} e ON r._row = e._row)"
        con.execute(f"DELETE FROM quarantine q WHERE {open_entry}{same_row(failing)}")
        accepted = f"(SELECT r.* FROM {w} r ANTI JOIN {err} e ON r._row = e._row)"
        con.execute(
            f"UPDATE quarantine q SET resolved_at = CAST(current_timestamp AS TIMESTAMP), "
            f"resolved_by = {lit(ingest_id)} WHERE {open_entry}{same_row(accepted)}"
        )
    if not any_row(con, err):
        return
    raw = ", ".join(f"{lit(f.name)}, r.{q(raw_column(f))}" for f in tdef.input_fields)
    # dates as the site wrote them (a mapping read 03/05/2010 as 2010-05-03), for the export
    written = [d[0] for d in con.execute(f"SELECT * FROM {w} LIMIT 0").description]
    raw += "".join(f", {lit(c)}, r.{q(c)}" for c in written if c.startswith(AS_WRITTEN_PREFIX))
    reasons = (
        f"SELECT _row, string_agg(DISTINCT edit_id, ';' ORDER BY edit_id) AS edit_ids, "
        f"string_agg(DISTINCT field, ';' ORDER BY field) AS fields, "
        f"string_agg(message, ' | ' ORDER BY severity, edit_id, field) AS messages, "
        f"to_json(list({{'edit_id': edit_id, 'severity': severity, 'field': field, "
        f"'value': value, 'message': message}} ORDER BY severity, edit_id, field)) AS reasons "
        f"FROM {RESULTS} WHERE table_name = {lit(name)} AND _row IN (SELECT _row FROM {err}) "
        f"GROUP BY _row"
    )
    con.execute(
        f"INSERT INTO quarantine (ingest_id, table_name, source_file, source_row, record_key, "
        f"source_key, edit_ids, fields, messages, reasons, raw) SELECT {lit(ingest_id)}, "
        f"{lit(name)}, r._source_file, r._source_row, {key}, {source_key}, g.edit_ids, g.fields, "
        "g.messages, "
        f"CAST(g.reasons AS VARCHAR), CAST(json_object({raw}) AS VARCHAR) "
        f"FROM {w} r JOIN ({reasons}) g ON g._row = r._row ORDER BY r._row"
    )


def _write_flags(
    con: duckdb.DuckDBPyConnection, tdef: TableDef, w: str, err: str, key: str, ingest_id: str
) -> None:
    """Warnings on accepted rows go to quality_flag, replacing the flags of the keys upserted."""
    name = tdef.name
    accepted_keys = f"SELECT {key} FROM {w} r ANTI JOIN {err} e ON r._row = e._row"
    if any_row(con, "quality_flag", f"table_name = {lit(name)}"):
        con.execute(
            f"DELETE FROM quality_flag WHERE table_name = {lit(name)} "
            f"AND record_key IN ({accepted_keys})"
        )
    if not any_row(con, RESULTS, f"table_name = {lit(name)} AND severity = 'warning'"):
        return
    con.execute(
        f"INSERT INTO quality_flag SELECT {lit(ingest_id)}, {lit(name)}, r._source_file, "
        f"r._source_row, {key}, x.edit_id, x.severity, x.field, x.value, x.message "
        f"FROM {RESULTS} x JOIN {w} r ON r._row = x._row ANTI JOIN {err} e ON e._row = x._row "
        f"WHERE x.table_name = {lit(name)} AND x.severity = 'warning' ORDER BY r._row, x.edit_id"
    )


def _clear_parent_flags(con: duckdb.DuckDBPyConnection, child: str) -> None:
    """A parent flagged for having no valid child (a patient without a tumour) loses the flag
    once the store holds a child of it, e.g. the fixed tumour sent alone later."""
    for rule in edits_by_check("no_valid_child"):
        key = rule.child_key()
        if rule.child != child or key is None:
            continue
        con.execute(
            f"DELETE FROM quality_flag WHERE edit_id = {lit(rule.id)} AND table_name = "
            f"{lit(rule.table)} AND record_key IN (SELECT {q(key[0])} FROM main.{q(child)})"
        )


def _log(con: duckdb.DuckDBPyConnection, report: IngestReport, started: datetime) -> None:
    con.execute(
        "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            report.ingest_id,
            report.source,
            started,
            datetime.now(UTC).replace(tzinfo=None),
            report.rows_read,
            report.accepted,
            report.quarantined,
            report.flagged,
            json.dumps(report.summary()),
        ],
    )

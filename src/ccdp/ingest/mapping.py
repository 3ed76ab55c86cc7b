"""Mapping specs: a declarative description of how one site's export becomes model tables.

A spec (YAML or JSON) names the site's source files once (`sources:`), then for each target
table says which source feeds it and how each model field is made: from a column, a constant or
a template of columns; with missing-value tokens, a regex extract, a value map (local code ->
model code), a code normaliser (ICD-O-3, DUO...) and date formats tried in order. Tables can
filter rows (`where:`), join another source (e.g. the patient file, by national id) and unpivot
wide columns (relapse1_date, relapse2_date -> one event row each). Like Splink's settings, the
spec is data: validated by Pydantic at the edge, with every error naming the file, line and key.

`apply_mapping(spec, source)` returns, per table, the model's input fields as canonical text;
values it cannot convert are passed through raw so the quality edits can quarantine the row
naming the field and the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from ccdp.errors import SpecError
from ccdp.ingest import convert
from ccdp.ingest.readers import SOURCE_FILE, SOURCE_ROW, ReaderOptions, read_table
from ccdp.ingest.specbase import StrictModel, StringLoader, did_you_mean
from ccdp.model import load_model
from ccdp.model.schema import FieldDef, TableDef

IDENTIFIER_KINDS = ("given_name", "family_name", "national_id", "birth_date")
IDENTIFIER_PREFIX = "_identifier_"
ITEM = "_item"
_TEMPLATE_REF = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
_DEFAULT_NORMALISERS = {
    "icdo3_topography": "icdo3_topography",
    "icdo3_morphology": "icdo3_morphology",
    "iso3166_alpha2": "iso3166_alpha2",
    "duo": "duo",
}


class MappingError(SpecError):
    """A mapping spec is invalid, or does not fit the source it is applied to."""


class SpecProblems(ValueError):
    """Semantic problems found after parsing, each with the key path where it lies."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


# ---------------------------------------------------------------------------- the spec model


class Condition(StrictModel):
    """A row filter on one source column: `equals`, `in` or `missing` (true/false)."""

    column: str
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    missing: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        given = [k for k in ("equals", "in_", "missing") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of `equals`, `in`, `missing`")
        return self


class FieldSpec(StrictModel):
    """How one model field is made. A plain string is shorthand for `{column: <string>}`."""

    column: str | None = Field(None, description="Source column holding the value")
    constant: str | None = Field(None, description="The same value on every row (e.g. country)")
    template: str | None = Field(
        None, description="Text with {column} references, {_row}, {_item}, {_file}"
    )
    missing: list[str] = Field(default_factory=list, description="Extra missing-value tokens")
    extract: str | None = Field(None, description="Regex; its first group is kept")
    values: dict[str, str | None] | str | None = Field(
        None, description="Value map (local -> model code), or the name of one in value_maps"
    )
    unmapped: Literal["raw", "missing", "error"] = "raw"
    date_formats: list[str] | None = None
    normalise: convert.Normaliser | None = None
    default: str | None = Field(None, description="Value used when the source is missing")
    optional: bool = Field(
        False, description="The column may be absent from the source (then the field is empty)"
    )
    confidence: float | None = Field(None, ge=0, le=1, description="Set by `ccdp map suggest`")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @field_validator("values", mode="before")
    @classmethod
    def _text_codes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): None if v is None else str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        given = [k for k in ("column", "constant", "template") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `column`, `constant`, `template`")
        if self.extract is not None:
            try:
                groups = re.compile(self.extract).groups
            except re.error as exc:
                raise ValueError(f"`extract` is not a valid regex: {exc}") from exc
            if groups < 1:
                raise ValueError("`extract` needs one capture group, e.g. 'Patient/(.+)'")
        return self

    @field_validator("date_formats")
    @classmethod
    def _dates(cls, value: list[str] | None) -> list[str] | None:
        return _check_date_formats(value)


class IdentifierSpec(StrictModel):
    """Direct identifiers (pseudonymised by ingest, names never stored)."""

    given_name: FieldSpec | None = None
    family_name: FieldSpec | None = None
    national_id: FieldSpec | None = None
    birth_date: FieldSpec | None = None


class JoinSpec(StrictModel):
    """Bring columns from another source, matching `on` (this column: that source's column)."""

    source: str
    on: dict[str, str]
    columns: list[str] | dict[str, str] = Field(
        description="Columns to bring; a mapping renames them (theirs: ours)"
    )

    def renames(self) -> dict[str, str]:
        cols = self.columns
        return dict(cols) if isinstance(cols, dict) else {c: c for c in cols}


class UnpivotSpec(StrictModel):
    """Wide to long: `columns: {date: [relapse1_date, relapse2_date]}` gives one row per item."""

    columns: dict[str, list[str]]

    @model_validator(mode="after")
    def _same_length(self) -> UnpivotSpec:
        lengths = {len(v) for v in self.columns.values()}
        if not self.columns or len(lengths) != 1 or 0 in lengths:
            raise ValueError("every unpivot column needs the same number (≥1) of source columns")
        return self

    @property
    def items(self) -> int:
        return len(next(iter(self.columns.values())))


class TablePart(StrictModel):
    """Rows of one model table from one source (a table may have several parts)."""

    source: str
    where: list[Condition] = Field(default_factory=list)
    join: list[JoinSpec] = Field(default_factory=list)
    unpivot: UnpivotSpec | None = None
    fields: dict[str, FieldSpec]
    identifiers: IdentifierSpec | None = None


class SourceSpec(ReaderOptions):
    """A site file (glob, relative to SOURCE) and how to read it."""

    file: str = Field(description="Glob relative to SOURCE, e.g. 'patients*.csv'")
    missing: list[str] = Field(default_factory=list)
    date_formats: list[str] | None = None
    decimal: Literal[".", ","] = "."
    where: list[Condition] = Field(default_factory=list)

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str) -> str:
        """A mapping reads the export folder only: an absolute path could read any file."""
        if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
            raise ValueError(
                f"{value!r} is an absolute path; name the file relative to the export folder"
            )
        return value

    @field_validator("date_formats")
    @classmethod
    def _dates(cls, value: list[str] | None) -> list[str] | None:
        return _check_date_formats(value)


class MappingSpec(StrictModel):
    """One site's mapping: its sources and, per model table, how rows and fields are made."""

    version: int = 1
    description: str | None = None
    missing: list[str] = Field(default_factory=list, description="Missing tokens everywhere")
    date_formats: list[str] = Field(default_factory=lambda: [convert.ISO])
    value_maps: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    sources: dict[str, SourceSpec]
    tables: dict[str, list[TablePart]]

    _origin: str = PrivateAttr("<mapping>")

    @field_validator("tables", mode="before")
    @classmethod
    def _single_part(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, dict) else v for k, v in value.items()}
        return value

    @field_validator("date_formats")
    @classmethod
    def _dates(cls, value: list[str]) -> list[str]:
        return _check_date_formats(value) or []

    @field_validator("value_maps", mode="before")
    @classmethod
    def _text_maps(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                name: {str(k): None if v is None else str(v) for k, v in m.items()}
                if isinstance(m, dict)
                else m
                for name, m in value.items()
            }
        return value

    @model_validator(mode="after")
    def _semantics(self) -> MappingSpec:
        if self.version != 1:
            raise SpecProblems([(("version",), f"unsupported mapping version {self.version}")])
        problems = list(_semantic_problems(self))
        if problems:
            raise SpecProblems(problems)
        return self

    @property
    def origin(self) -> str:
        """The mapping file this spec came from (for messages)."""
        return self._origin


def _check_date_formats(formats: list[str] | None) -> list[str] | None:
    """Known formats, and never one shape in both day/month orders: the first format listed
    would read 03/04/2017 every time, so the other order would silently never apply to it."""
    for i, fmt in enumerate(formats or []):
        if fmt not in convert.NAMED_DATE_FORMATS and "%" not in fmt:
            raise ValueError(
                f"date format {fmt!r} is neither 'iso', 'excel_serial' nor a strftime pattern "
                "such as '%d/%m/%Y'"
            )
        other = convert.swapped_order(fmt)
        if formats is not None and other is not None and other in formats[i + 1 :]:
            raise ValueError(
                f"lists {fmt!r} ({convert.date_order(fmt)}) and {other!r} "
                f"({convert.date_order(other)}), the same shape in both orders: a value such as "
                f"03/04/2017 fits both and {fmt!r} always wins, silently; keep the one order "
                "the site writes (a value with 13-31 first means day first, second means month "
                "first)"
            )
    return formats


def _semantic_problems(spec: MappingSpec) -> Iterator[tuple[tuple, str]]:
    model = load_model()
    for table, parts in spec.tables.items():
        if table not in model.tables:
            yield (
                ("tables", table),
                (
                    f"unknown table {table!r}{did_you_mean(table, model.table_names)}; "
                    f"model tables: {', '.join(model.table_names)}"
                ),
            )
            continue
        tdef = model.table(table)
        for i, part in enumerate(parts):
            yield from _part_problems(spec, tdef, part, ("tables", table, i))


def _part_problems(
    spec: MappingSpec, tdef: TableDef, part: TablePart, at: tuple
) -> Iterator[tuple[tuple, str]]:
    names = list(spec.sources)
    if part.source not in spec.sources:
        yield (
            (*at, "source"),
            (
                f"unknown source {part.source!r}{did_you_mean(part.source, names)}; "
                f"sources: {', '.join(names)}"
            ),
        )
    for j, join in enumerate(part.join):
        if join.source not in spec.sources:
            yield (
                (*at, "join", j, "source"),
                (f"unknown source {join.source!r}{did_you_mean(join.source, names)}"),
            )
    inputs = {f.name for f in tdef.input_fields}
    for name, fs in part.fields.items():
        here = (*at, "fields", name)
        if name not in inputs:
            if name in tdef.field_names:
                yield here, f"field {name!r} of table {tdef.name} is derived at ingest; remove it"
            else:
                yield (
                    here,
                    (
                        f"table {tdef.name} has no field {name!r}{did_you_mean(name, inputs)}; "
                        f"its fields: {', '.join(sorted(inputs))}"
                    ),
                )
        if isinstance(fs.values, str) and fs.values not in spec.value_maps:
            yield (
                (*here, "values"),
                (
                    f"no value map named {fs.values!r} in value_maps"
                    f"{did_you_mean(fs.values, list(spec.value_maps))}"
                ),
            )
    if part.identifiers is not None and tdef.name != "patient":
        yield (*at, "identifiers"), "identifiers belong to the patient table"
    implied = {"behaviour"} if "morphology" in part.fields else set()
    for fdef in tdef.input_fields:
        if fdef.required and fdef.name not in part.fields and fdef.name not in implied:
            yield (
                (*at, "fields"),
                (
                    f"table {tdef.name}: required field {fdef.name!r} is not mapped "
                    "(give a column, a constant or a template)"
                ),
            )


# ---------------------------------------------------------------------------- loading


def load_mapping(path: str | Path) -> MappingSpec:
    """Parse and validate a mapping file; any problem is one MappingError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path}: cannot read ({exc})") from exc
    data, lines = _parse(text, path)
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {path}: expected a mapping of keys (sources:, tables:)")
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        raise MappingError(_describe(exc, data, lines, path)) from None
    spec._origin = str(path)
    return spec


def _parse(text: str, path: Path) -> tuple[Any, dict[tuple, int]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MappingError(
                f"mapping file {path}, line {exc.lineno}, column {exc.colno}: invalid JSON: "
                f"{exc.msg}"
            ) from None
        try:
            node = _compose(text)
        except yaml.YAMLError:
            return data, {}
        return data, {} if node is None else _line_index(node, (), path)
    try:
        loader = StringLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise MappingError(f"mapping file {path}: the file is empty")
            lines = _line_index(node, (), path)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MappingError(
            f"mapping file {path}{where}: YAML syntax error: {exc.problem or exc.context}"
        ) from None
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping file {path}: YAML syntax error: {exc}") from None
    return data, lines


def _compose(text: str) -> yaml.Node | None:
    loader = StringLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _line_index(node: yaml.Node, at: tuple, path: Path) -> dict[tuple, int]:
    """Line (1-based) of every key and list item; duplicate keys are an error here."""
    lines: dict[tuple, int] = {at: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise MappingError(
                    f"mapping file {path}, line {line}: key {key!r} repeated "
                    f"(first on line {seen[key]}) at {_dotted(at) or 'top level'}"
                )
            seen[key] = line
            lines.update(_line_index(value_node, (*at, key), path))
            lines[(*at, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*at, i), path))
    return lines


def _describe(exc: ValidationError, data: Any, lines: dict[tuple, int], path: Path) -> str:
    """One line per problem: `file, line N: dotted.key: message`."""
    out: list[str] = []
    for err in exc.errors():
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, SpecProblems):
            for loc, msg in error.problems:
                out.append(_locate(path, _data_path(data, loc), lines, msg))
            continue
        loc = _data_path(data, err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "unknown_key":
            loc = (*loc, err["ctx"]["key"])
        elif err["type"] == "missing":
            msg = f"required key {err['loc'][-1]!r} is missing"
        out.append(_locate(path, loc, lines, msg))
    unique = list(dict.fromkeys(out))
    more = f"\n(and {len(unique) - 8} more problems)" if len(unique) > 8 else ""
    return "\n".join(unique[:8]) + more


def _data_path(data: Any, loc: tuple) -> tuple:
    """The part of a Pydantic error location that exists in the data (drops wrapper steps)."""
    out: list = []
    node = data
    for seg in loc:
        if isinstance(node, dict) and seg in node:
            node = node[seg]
            out.append(seg)
        elif isinstance(node, dict) and seg == "in_" and "in" in node:
            node = node["in"]
            out.append("in")
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
            out.append(seg)
    return tuple(out)


def _locate(path: Path, loc: tuple, lines: dict[tuple, int], msg: str) -> str:
    line = None
    for n in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:n]))
        if line is not None:
            break
    where = f", line {line}" if line is not None else ""
    key = _dotted(loc)
    return f"mapping file {path}{where}: {key + ': ' if key else ''}{msg}"


def _dotted(loc: tuple) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in loc).lstrip(".")


# ---------------------------------------------------------------------------- applying


class MappedTables(dict[str, pd.DataFrame]):
    """The tables a mapping built, and per table the optional fields whose column the export
    lacks (empty, and listed by the ingest report as `absent_columns`, as for native exports)."""

    def __init__(
        self, frames: dict[str, pd.DataFrame], absent_columns: dict[str, list[str]]
    ) -> None:
        super().__init__(frames)
        self.absent_columns = absent_columns


def apply_mapping(spec: MappingSpec, source: str | Path) -> MappedTables:
    """Read the site's files and build each target table as canonical text (see module doc)."""
    run = _Run(spec, Path(source))
    model = load_model()
    out: dict[str, pd.DataFrame] = {}
    absent: dict[str, list[str]] = {}
    for table, parts in spec.tables.items():
        tdef = model.table(table)
        frames = [run.part(tdef, part, i) for i, part in enumerate(parts)]
        out[table] = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        # absent when no part of the table found the column it maps the field from
        missing = run.absent.get(table, set()) - run.provided.get(table, set())
        if missing:
            absent[table] = [f.name for f in tdef.input_fields if f.name in missing]
    return MappedTables(out, absent)


class _Run:
    """State of one application: where SOURCE is, and the files already read."""

    def __init__(self, spec: MappingSpec, source: Path):
        if not source.exists():
            raise MappingError(f"source {source} does not exist")
        self.spec = spec
        self.source = source
        self.root = source if source.is_dir() else source.parent
        self._cache: dict[tuple, pd.DataFrame] = {}
        # per table: fields mapped from a column the export lacks / fields some part provided
        self.absent: dict[str, set[str]] = {}
        self.provided: dict[str, set[str]] = {}

    # -- sources ---------------------------------------------------------------------------
    def files(self, name: str) -> list[Path]:
        pattern = self.spec.sources[name].file
        if self.source.is_file():
            hits = [self.source] if self.source.match(pattern) else []
        else:
            hits = sorted(p for p in self.root.glob(pattern) if p.is_file())
        root = self.root.resolve()
        for hit in hits:
            # `..` or a symlink may lead out of the folder: only the site's export is read
            if not hit.resolve().is_relative_to(root):
                raise MappingError(
                    f"mapping file {self.spec.origin}: sources.{name}.file: {pattern!r} names "
                    f"{hit.resolve()}, outside the export folder {self.root}; mappings may only "
                    "read files inside it"
                )
        if not hits:
            present = sorted(
                p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
            )[:15]
            raise MappingError(
                f"mapping file {self.spec.origin}: source {name!r}: no file matches {pattern!r} in "
                f"{self.root} (files there: {', '.join(present) or 'none'})"
            )
        return hits

    def read(self, name: str) -> pd.DataFrame:
        """All files of source `name`, stacked, with source-level filters applied."""
        src = self.spec.sources[name]
        pieces = []
        for path in self.files(name):
            key = (path, src.reader_key())
            if key not in self._cache:
                frame = read_table(path, src)
                frame[SOURCE_FILE] = path.relative_to(self.root).as_posix()
                self._cache[key] = frame
            pieces.append(self._cache[key])
        frame = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
        return self.filter(frame, src.where, name, ("sources", name))

    def missing_tokens(self, source: str, fs: FieldSpec | None = None) -> list[str]:
        extra = fs.missing if fs is not None else []
        return [*self.spec.missing, *self.spec.sources[source].missing, *extra]

    def require(self, frame: pd.DataFrame, column: str, source: str, what: str) -> pd.Series:
        """The column, or an error naming mapping, place, column, files and close matches."""
        if column in frame.columns:
            return frame[column]
        columns = [c for c in frame.columns if not c.startswith("_")]
        files = ", ".join(sorted({str(f) for f in frame[SOURCE_FILE].unique()}))
        raise MappingError(
            f"mapping file {self.spec.origin}: {what}: column {column!r} is not in source "
            f"{source!r} "
            f"({files or self.spec.sources[source].file}){did_you_mean(column, columns)}"
            f"; columns: {', '.join(columns[:30])}"
        )

    # -- rows ------------------------------------------------------------------------------
    def filter(
        self, frame: pd.DataFrame, conditions: list[Condition], source: str, at: tuple
    ) -> pd.DataFrame:
        if not conditions:
            return frame
        keep = pd.Series(True, index=frame.index)
        for cond in conditions:
            raw = self.require(frame, cond.column, source, f"{_dotted(at)} where")
            values = convert.blank_missing(convert.clean(raw), self.missing_tokens(source))
            folded = values.str.casefold()
            if cond.equals is not None:
                test = folded == cond.equals.strip().casefold()
            elif cond.in_ is not None:
                test = folded.isin({v.strip().casefold() for v in cond.in_})
            else:
                test = values.isna() if cond.missing else values.notna()
            keep &= test.fillna(False).astype(bool)
        return frame.loc[keep.to_numpy()].reset_index(drop=True)

    def join(self, frame: pd.DataFrame, join: JoinSpec, source: str, what: str) -> pd.DataFrame:
        """Left join on cleaned keys; ambiguous right keys give None, never a duplicated row."""
        right = self.read(join.source)
        renames = join.renames()
        for left_col, right_col in join.on.items():
            self.require(frame, left_col, source, f"{what} on")
            self.require(right, right_col, join.source, f"{what} on")
        for col, new in renames.items():
            self.require(right, col, join.source, f"{what} columns")
            if new in frame.columns:
                raise MappingError(
                    f"mapping file {self.spec.origin}: {what}: joined column {new!r} already "
                    f"exists in source {source!r}; rename it (columns: {{{col}: other_name}})"
                )
        lkeys = [f"__jl{i}" for i in range(len(join.on))]
        rkeys = [f"__jr{i}" for i in range(len(join.on))]
        left = frame.assign(
            **{k: convert.clean(frame[c]) for k, c in zip(lkeys, join.on, strict=True)}
        )
        rsub = pd.DataFrame(
            {k: convert.clean(right[c]) for k, c in zip(rkeys, join.on.values(), strict=True)}
        )
        for col, new in renames.items():
            rsub[new] = right[col].to_numpy()
        rsub = rsub.dropna(subset=rkeys).drop_duplicates(subset=rkeys, keep=False)
        merged = left.merge(rsub, how="left", left_on=lkeys, right_on=rkeys, sort=False)
        merged = merged.drop(columns=lkeys + rkeys)
        for new in renames.values():
            merged[new] = merged[new].astype(object).where(merged[new].notna(), None)
        return merged

    def unpivot(
        self, frame: pd.DataFrame, spec: UnpivotSpec, source: str, what: str
    ) -> pd.DataFrame:
        for cols in spec.columns.values():
            for col in cols:
                self.require(frame, col, source, f"{what} unpivot")
        wide = {c for cols in spec.columns.values() for c in cols}
        base = frame.drop(columns=[c for c in wide if c not in spec.columns])
        tokens = self.missing_tokens(source)
        pieces = []
        for i in range(spec.items):
            piece = base.copy()
            for new, cols in spec.columns.items():
                piece[new] = convert.blank_missing(convert.clean(frame[cols[i]]), tokens)
            piece[ITEM] = str(i + 1)
            piece["__pos"] = range(len(piece))
            pieces.append(piece)
        long = pd.concat(pieces, ignore_index=True)
        present = long[list(spec.columns)].notna().any(axis=1)
        long = long.loc[present].sort_values(["__pos", ITEM], kind="mergesort")
        return long.drop(columns="__pos").reset_index(drop=True)

    # -- one table part --------------------------------------------------------------------
    def part(self, tdef: TableDef, part: TablePart, index: int) -> pd.DataFrame:
        at = (
            ("tables", tdef.name, index)
            if len(self.spec.tables[tdef.name]) > 1
            else ("tables", tdef.name)
        )
        what = f"table {tdef.name}"
        frame = self.filter(self.read(part.source), part.where, part.source, (*at, "where"))
        for join in part.join:
            frame = self.join(frame, join, part.source, f"{what} join {join.source!r}")
        if part.unpivot is not None:
            frame = self.unpivot(frame, part.unpivot, part.source, what)
        out = pd.DataFrame(index=frame.index)
        split_behaviour: pd.Series | None = None
        # after the fields: dates the other order reads, and why unread dates are no dates
        ambiguous: dict[str, pd.Series] = {}
        for fdef in tdef.input_fields:
            fs = part.fields.get(fdef.name)
            if fs is None:
                out[fdef.name] = _nones(frame.index)
                continue
            needed = fdef.required or fdef.name in tdef.primary_key
            if fs.column is not None and fs.column not in frame.columns and not needed:
                # an optional field the registry does not record: empty, and reported
                out[fdef.name] = _nones(frame.index)
                self.absent.setdefault(tdef.name, set()).add(fdef.name)
                continue
            self.provided.setdefault(tdef.name, set()).add(fdef.name)
            values, behaviour, side = self.field(
                frame, fdef, fs, part.source, what, key=_dotted((*at, "fields", fdef.name))
            )
            out[fdef.name] = values
            if behaviour is not None:
                split_behaviour = behaviour
            ambiguous.update(side)
        if split_behaviour is not None and "behaviour" in out.columns:
            own = out["behaviour"]
            out["behaviour"] = own.where(own.notna(), split_behaviour)
        out[SOURCE_FILE] = frame[SOURCE_FILE].to_numpy()
        out[SOURCE_ROW] = frame[SOURCE_ROW].to_numpy()
        for name, column in ambiguous.items():
            out[name] = column
        if part.identifiers is not None:
            for kind in IDENTIFIER_KINDS:
                fs = getattr(part.identifiers, kind)
                if fs is not None and not (fs.optional and fs.column not in frame.columns):
                    fdef = _identifier_def(kind)
                    out[IDENTIFIER_PREFIX + kind] = self.field(
                        frame, fdef, fs, part.source, f"{what} identifiers"
                    )[0]
        return out.reset_index(drop=True)

    def field(
        self,
        frame: pd.DataFrame,
        fdef: FieldDef,
        fs: FieldSpec,
        source: str,
        what: str,
        key: str | None = None,
    ) -> tuple[pd.Series, pd.Series | None, dict[str, pd.Series]]:
        """One field's canonical text, the behaviour split off a morphology code, and side
        columns for dates: where one day/month order reads a value the other reads differently,
        the text and the other date; where no declared format reads it, why it is no date.

        The conversion runs once per distinct value (a date column of 10^6 rows has a few
        thousand distinct dates) and is then spread back over the rows. `key` is the field's
        place in the spec (tables.tumour.fields.morphology), named when its column is missing.
        """
        here = f"{what}, field {fdef.name}" + (f" (key {key})" if key else "")
        if fs.constant is not None:
            raw = pd.Series(fs.constant, index=frame.index, dtype=object)
        elif fs.template is not None:
            raw = self.template(frame, fs.template, source, here)
        elif fs.optional and fs.column not in frame.columns:
            return _nones(frame.index), None, {}
        else:
            assert fs.column is not None  # the spec model requires one of column/constant/template
            required = f"{here}, a required field" if fdef.required else here
            raw = self.require(frame, fs.column, source, required)
        codes, uniques = pd.factorize(raw.astype(object), use_na_sentinel=True)
        codes = np.where(codes < 0, len(uniques), codes)  # the appended None stands for missing
        distinct = pd.Series([*uniques, None], dtype=object)
        values = convert.blank_missing(convert.clean(distinct), self.missing_tokens(source, fs))
        if fs.extract is not None:
            values = convert.extract(values, fs.extract)
        if fs.values is not None:
            values = self.value_map(frame, codes, values, fs, here)
        behaviour = None
        how = fs.normalise or _DEFAULT_NORMALISERS.get(fdef.code_system or "", "none")
        if how == "icdo3_morphology":
            split = convert.split_morphology(values)
            values, behaviour = split["morphology"], split["behaviour"]
        elif how != "none":
            values = convert.normalise(values, how)
        text = values
        values, other, why = self.typed(values, fdef, fs, source)
        side: dict[str, pd.Series] = {}
        if fdef.type in ("date", "partial_date"):
            read = text.notna() & values.notna() & (values != text)
            if read.any():
                written = _spread(text.where(read, None), codes, frame.index)
                side[convert.AS_WRITTEN_PREFIX + fdef.name] = written
        if fs.default is not None:
            values = values.where(values.notna(), fs.default)
        if other is not None and other.notna().any():
            shown = text.where(other.notna(), None)
            side[convert.AMBIGUOUS_DATE_PREFIX + fdef.name] = _spread(shown, codes, frame.index)
            side[convert.AMBIGUOUS_DATE_PREFIX + fdef.name + "__other"] = _spread(
                other, codes, frame.index
            )
        if why is not None and why.notna().any():
            side[convert.UNREAD_DATE_PREFIX + fdef.name] = _spread(why, codes, frame.index)
        return (
            _spread(values, codes, frame.index),
            None if behaviour is None else _spread(behaviour, codes, frame.index),
            side,
        )

    def value_map(
        self, frame: pd.DataFrame, codes: np.ndarray, values: pd.Series, fs: FieldSpec, here: str
    ) -> pd.Series:
        table = self.spec.value_maps[fs.values] if isinstance(fs.values, str) else fs.values
        mapped, unmapped = convert.map_values(values, table or {})
        if not unmapped.any() or fs.unmapped == "raw":
            return mapped
        if fs.unmapped == "missing":
            return mapped.where(~unmapped, None)
        rows = unmapped.to_numpy()[codes]
        firsts = frame.loc[rows].assign(__v=values.to_numpy()[codes][rows])
        firsts = firsts.drop_duplicates("__v")
        shown = "; ".join(
            f"{v!r} ({f} row {r})"
            for v, f, r in firsts[["__v", SOURCE_FILE, SOURCE_ROW]].head(5).itertuples(index=False)
        )
        raise MappingError(
            f"mapping file {self.spec.origin}: {here}: value(s) not in the value map "
            f"(unmapped: error): {shown}"
        )

    def typed(
        self, values: pd.Series, fdef: FieldDef, fs: FieldSpec, source: str
    ) -> tuple[pd.Series, pd.Series | None, pd.Series | None]:
        """Canonical text; for dates also the other day/month reading where it would differ,
        and why a value no declared format reads is no date."""
        src = self.spec.sources[source]
        if fdef.type in ("date", "partial_date"):
            formats = fs.date_formats or src.date_formats or self.spec.date_formats
            dates, read_by = convert.read_dates(values, formats, fdef.type == "partial_date")
            unread = values.notna().to_numpy() & (read_by < 0)
            why = (
                convert.why_not_dates(values.where(unread, None), formats) if unread.any() else None
            )
            return dates, convert.other_readings(values, dates, read_by, formats), why
        if fdef.type == "integer":
            values = convert.canonical_integer(values)
        elif fdef.type == "float":
            return convert.canonical_float(values, src.decimal), None, None
        elif fdef.type == "boolean":
            return convert.canonical_boolean(values), None, None
        if fdef.allowed:
            values = convert.canonical_enum(values, fdef.allowed)
        return values, None, None

    def template(self, frame: pd.DataFrame, template: str, source: str, here: str) -> pd.Series:
        """Render `{column}` references row-wise (vectorised); a missing reference gives None."""
        specials = {"_row": SOURCE_ROW, "_file": SOURCE_FILE, "_item": ITEM}
        out = pd.Series("", index=frame.index, dtype=object)
        absent = pd.Series(False, index=frame.index)
        pos = 0
        for m in _TEMPLATE_REF.finditer(template):
            out = out + template[pos : m.start()]
            pos = m.end()
            if m.group(1) is None:
                out = out + m.group(0)[0]
                continue
            name = m.group(1).strip()
            col = specials.get(name, name)
            if name == "_item" and ITEM not in frame.columns:
                raise MappingError(
                    f"mapping file {self.spec.origin}: {here}: {{_item}} needs an unpivot"
                )
            part = convert.clean(
                self.require(frame, col, source, f"{here} template").map(
                    lambda v: v if v is None else str(v)
                )
            )
            part = convert.blank_missing(part, self.missing_tokens(source))
            absent |= part.isna()
            out = out + part.fillna("")
        out = out + template[pos:]
        return out.where(~absent, None)


def _spread(distinct: pd.Series, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """Per-distinct-value results back onto the rows; missing is None."""
    values = distinct.astype(object).to_numpy()[codes]
    out = pd.Series(values, index=index, dtype=object)
    return out.where(out.notna(), None)


def _nones(index: pd.Index) -> pd.Series:
    return pd.Series([None] * len(index), index=index, dtype=object)


def _identifier_def(kind: str) -> FieldDef:
    kind_type = "partial_date" if kind == "birth_date" else "string"
    return FieldDef(name=kind, type=kind_type, description=f"direct identifier: {kind}")

"""The plug-in contract every analysis follows.

A federated analysis is a conversation of one or more rounds. The coordinator calls `start` for the
first request, sends it to every node, each node runs `local` on its own analysis view and answers
with a `Summary`, and the coordinator calls `combine` on the summaries; `combine` either finishes
(`Done`) or asks for another round (`Continue`, e.g. a Newton step of Cox or IRLS).

A Summary is made of typed parts so that disclosure control can judge any analysis's output
without knowing the analysis: `CountsPart` (cell counts: small-cell and secondary suppression),
`EventTimesPart` (event-time tables: time grid and group-size rules) and `AggregatePart` (model sums
such as a gradient and Hessian: minimum cohort size and parameter count).

Every part built at a node also says, node-side only, which records each of its rows counts
(`Records`): the disclosure gate needs the sets, not only their sizes, to refuse a release that
differs from an earlier one by a few children. Fields marked `LOCAL` never go on the wire.
"""

from __future__ import annotations

import base64
import binascii
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ccdp.analyses.errors import MalformedSummary

if TYPE_CHECKING:
    from ccdp.cohort.view import Rows
    from ccdp.disclosure.context import DisclosureContext

Unit = Literal["tumours", "patients", "specimens"]
LOCAL = {"local": True}  # dataclass field metadata: kept at the node, never sent


class AnalysisParams(BaseModel):
    """Base of every analysis's parameter model; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class AnalysisResult(BaseModel):
    """Base of every result: JSON-serialisable, printable as a table, convertible to pandas."""

    model_config = ConfigDict(extra="forbid")

    analysis: str

    def to_frame(self) -> pd.DataFrame:  # overridden by each result
        return pd.DataFrame([self.model_dump(mode="json")])


@dataclass
class Records:
    """Node-side only: which records each row of a part counts.

    `keys` holds one ledger key per record used (see `NodeData.record_keys`), `row` the part's
    row (cell, table row) that record is counted in, -1 when it is in none. A part's row counts
    the distinct keys of its records, so the same arrays serve tumour and patient units.

    `owners` (the patient key of each tumour record) make the sets exact across units: within
    each row, every patient is represented by their patient key once (their first tumour there)
    and further tumours by their own keys, so a tumour count and a patient count of the same
    patients differ, as sets, by exactly the extra tumours.

    `by_owner` (specimens): a row still counts its distinct keys (samples), but what it says
    is judged by their owners (children), since one child may give many samples. Its sets are
    then two contributor keys per owner: the owner's identity and a hash of the owner's keys in
    that row. Two such sets differ by exactly twice the number of children whose samples differ
    between them (added, removed or changed), whatever their number of samples, so the ledger
    compares children, not samples."""

    keys: np.ndarray
    row: np.ndarray
    owners: np.ndarray | None = None
    by_owner: bool = False

    def __post_init__(self) -> None:
        self.keys = np.asarray(self.keys, dtype=np.uint64)
        self.row = np.asarray(self.row, dtype=np.int64)
        if self.owners is not None:
            self.owners = np.asarray(self.owners, dtype=np.uint64)
        if self.keys.shape != self.row.shape or (
            self.owners is not None and self.owners.shape != self.keys.shape
        ):
            raise ValueError("records: one row index (and owner) per key")
        if self.by_owner and self.owners is None:
            raise ValueError("records: counting by owner needs the owners")

    @classmethod
    def single(cls, keys: np.ndarray, owners: np.ndarray | None = None) -> Records:
        """Every record counted in the part's one row (a total, a model's rows)."""
        return cls(keys, np.zeros(len(keys), dtype=np.int64), owners)

    def _atoms(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, key) of the counted records, sorted, with each patient's first record in a row
        keyed by the patient when no record there already is."""
        keep = row >= 0
        rows, keys = row[keep], self.keys[keep]
        if self.owners is None:
            order = np.lexsort((keys, rows))
            return rows[order], keys[order]
        owners = self.owners[keep]
        order = np.lexsort((keys, owners, rows))
        rows, keys, owners = rows[order], keys[order], owners[order]
        if len(rows):
            new = np.ones(len(rows), dtype=bool)
            new[1:] = (rows[1:] != rows[:-1]) | (owners[1:] != owners[:-1])
            starts = np.flatnonzero(new)
            has = np.maximum.reduceat((keys == owners).astype(np.int8), starts).astype(bool)
            first = starts[~has]
            keys = keys.copy()
            keys[first] = owners[first]
        order = np.lexsort((keys, rows))
        return rows[order], keys[order]

    def _contributors(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, key) of each owner's two contributor keys in each row (see `by_owner`)."""
        assert self.owners is not None
        keep = row >= 0
        rows, keys, owners = row[keep], self.keys[keep], self.owners[keep]
        order = np.lexsort((keys, owners, rows))
        rows, keys, owners = rows[order], keys[order], owners[order]
        if not len(rows):
            return rows, keys
        same = (rows[1:] == rows[:-1]) & (owners[1:] == owners[:-1])
        distinct = np.ones(len(rows), dtype=bool)
        distinct[1:] = ~same | (keys[1:] != keys[:-1])
        rows, keys, owners = rows[distinct], keys[distinct], owners[distinct]
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (rows[1:] != rows[:-1]) | (owners[1:] != owners[:-1])
        starts = np.flatnonzero(new)
        contribution = np.add.reduceat(mix64(keys), starts)  # a hash of the owner's key set
        who = owners[starts]
        identity = mix64(who ^ _IDENTITY)
        share = mix64(mix64(who ^ _SHARE) + contribution)
        out_rows = np.concatenate([rows[starts], rows[starts]])
        out_keys = np.concatenate([identity, share])
        order = np.lexsort((out_keys, out_rows))
        return out_rows[order], out_keys[order]

    def _pairs(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._contributors(row) if self.by_owner else self._atoms(row)

    def sets(self, n_rows: int) -> list[np.ndarray]:
        """Sorted distinct keys of each of the part's `n_rows` rows (for records counted by
        owner, their contributor keys: the sets the ledger compares)."""
        rows, keys = self._pairs(self.row)
        bounds = np.searchsorted(rows, np.arange(n_rows + 1))
        return [np.unique(keys[bounds[i] : bounds[i + 1]]) for i in range(n_rows)]

    def sizes(self, n_rows: int) -> np.ndarray:
        """How many distinct records each row counts: the count it states."""
        if not self.by_owner:
            return np.array([s.size for s in self.sets(n_rows)], dtype=np.int64)
        keep = self.row >= 0
        rows, keys = self.row[keep], self.keys[keep]
        order = np.lexsort((keys, rows))
        rows, keys = rows[order], keys[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (keys[1:] != keys[:-1])
        return np.bincount(rows[first], minlength=n_rows)[:n_rows].astype(np.int64)

    def owner_sets(self, n_rows: int) -> list[np.ndarray]:
        """Sorted distinct owners (children) of each row."""
        owners = self.keys if self.owners is None else self.owners
        keep = self.row >= 0
        rows, own = self.row[keep], owners[keep]
        order = np.lexsort((own, rows))
        rows, own = rows[order], own[order]
        bounds = np.searchsorted(rows, np.arange(n_rows + 1))
        return [np.unique(own[bounds[i] : bounds[i + 1]]) for i in range(n_rows)]

    def union(self) -> np.ndarray:
        """Sorted distinct keys of every record counted anywhere in the part."""
        return np.unique(self._pairs(np.where(self.row >= 0, 0, -1))[1])

    def single_row(self) -> Records:
        """The same records, all counted in one row (a model over a table's rows)."""
        return replace(self, row=np.where(self.row >= 0, 0, -1))

    def remap(self, new_row: np.ndarray) -> Records:
        """The same records with row i renamed new_row[i] (-1 drops it)."""
        new_row = np.asarray(new_row, dtype=np.int64)
        row = np.full(self.row.shape, -1, dtype=np.int64)
        counted = self.row >= 0
        row[counted] = new_row[self.row[counted]]
        return replace(self, row=row)


# Salts of the two contributor keys of an owner (see Records.by_owner).
_IDENTITY = np.uint64(0x5EC1_3E45_0000_0001)
_SHARE = np.uint64(0x5EC1_3E45_0000_0002)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 (wrapping): a fast, well-spread hash that
    derives new keys from ledger keys without colliding with the keys themselves."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


@dataclass
class CountsPart:
    """A table of counts. `cells` rows hold the grouping values (`dims`) and count columns
    (`counts`); disclosure suppresses small cells and applies secondary suppression over margins.
    `withheld` counts suppressed cells that are not listed (their labels would say too much);
    `records` (node-side) says which records each cell counts."""

    kind: ClassVar[Literal["counts"]] = "counts"
    dims: list[str]
    counts: list[str]
    cells: list[dict[str, Any]]
    withheld: int = 0
    records: Records | None = field(default=None, metadata=LOCAL, repr=False, compare=False)


GROUP, TIME = "group", "time"  # the two columns every event-time table has


@dataclass
class EventTimesPart:
    """Per-group event-time table as KM, log-rank and unstratified Cox need; allowed or coarsened
    according to the node's policy.

    Columnar (one array per column, one entry per row) because the tables are long (a row per
    distinct time) and travel every round: `group` holds the group labels (text), `time` the
    times, the other columns counts or sums (2-D for vector-valued sums such as Cox moments).
    Columns are checked on construction: equal lengths, numbers finite, only `group` as text.
    On the wire 1-D columns are JSON lists, readable in the node's log; 2-D float columns, the
    bulk of a Cox table, are packed arrays (see `pack`), exact to the bit and cheap to encode.
    """

    kind: ClassVar[Literal["event_times"]] = "event_times"
    group_by: list[str]
    columns: dict[str, np.ndarray]
    group_sizes: dict[str, int]
    time_unit: str = "day"
    records: Records | None = field(default=None, metadata=LOCAL, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.columns = event_columns(self.columns)

    def __len__(self) -> int:
        return len(self.columns[GROUP])

    def take(self, keep: np.ndarray) -> EventTimesPart:
        """The rows where `keep` (a boolean mask) is true, with the same metadata."""
        records = self.records
        if records is not None:
            renumber = np.where(keep, np.cumsum(keep) - 1, -1)
            records = records.remap(renumber)
        return replace(self, columns={k: v[keep] for k, v in self.columns.items()}, records=records)


def event_columns(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """Columns as arrays after the shape and value checks of EventTimesPart (MalformedSummary
    names the offending column), so a table from the wire is as safe to use as one built here."""
    if not isinstance(columns, dict) or GROUP not in columns or TIME not in columns:
        raise MalformedSummary("an event-time table needs `group` and `time` columns")
    out = {str(k): _column(str(k), v, text=k == GROUP) for k, v in columns.items()}
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise MalformedSummary(f"event-time columns of different lengths: {lengths}")
    return out


PACKED = "float64-le-base64"  # the one packed-array encoding: IEEE doubles, little-endian


def pack(arr: np.ndarray) -> dict[str, Any]:
    """A float array as a JSON object: its shape and its bytes (little-endian float64, base64).
    Exact to the bit, and encoded and parsed at memory speed rather than number by number."""
    data = np.ascontiguousarray(arr, dtype="<f8").tobytes()
    return {"encoding": PACKED, "shape": list(arr.shape), "data": base64.b64encode(data).decode()}


def unpack(name: str, packed: dict[str, Any]) -> np.ndarray:
    """The array of `pack`, or MalformedSummary saying what is wrong with the object."""
    if set(packed) != {"encoding", "shape", "data"} or packed["encoding"] != PACKED:
        raise MalformedSummary(
            f"column {name!r}: a packed array is {{encoding: {PACKED}, shape, data}}"
        )
    shape, data = packed["shape"], packed["data"]
    if not (isinstance(shape, list) and all(type(k) is int and k >= 0 for k in shape)):
        raise MalformedSummary(f"column {name!r}: shape must be a list of sizes")
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except binascii.Error:
        raw = None
    if raw is None or len(raw) != 8 * math.prod(shape):
        raise MalformedSummary(f"column {name!r}: data is not base64 of {shape} float64 values")
    return np.frombuffer(raw, dtype="<f8").reshape(shape).astype(float)


def _column(name: str, values: Any, text: bool) -> np.ndarray:
    """One column as an array: labels (text) for `group`, finite numbers for every other."""
    if isinstance(values, dict) and not text:
        values = unpack(name, values)
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged nested lists
        raise MalformedSummary(f"column {name!r}: rows of different lengths") from None
    if arr.ndim == 0:
        raise MalformedSummary(f"column {name!r}: a list of values is needed, not one value")
    if text:
        if arr.size == 0 or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.flat)):
            return arr.astype(str)
        if arr.ndim != 1 or arr.dtype.kind != "U":
            raise MalformedSummary(f"column {name!r}: group labels must be a list of text")
        return arr
    if arr.size == 0:
        return arr.astype(float)
    if arr.dtype.kind not in "iuf":
        raise MalformedSummary(f"column {name!r}: values must be numbers")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise MalformedSummary(f"column {name!r}: values must be finite (no NaN or infinity)")
    return arr


@dataclass
class AggregatePart:
    """Model sums (gradient, Hessian, log-likelihood, deviance, ...) over `n` rows estimating
    `n_params` parameters; refused below the node's minimum cohort size or above n/3 params."""

    kind: ClassVar[Literal["aggregate"]] = "aggregate"
    n: int
    n_params: int
    values: dict[str, Any]
    records: Records | None = field(default=None, metadata=LOCAL, repr=False, compare=False)
    # node-side: records per level of each categorical term (covariates, a binary outcome);
    # None means the analysis did not say, and the gate refuses the part
    levels: dict[str, list[int]] | None = field(
        default=None, metadata=LOCAL, repr=False, compare=False
    )


Part = CountsPart | EventTimesPart | AggregatePart
_P = TypeVar("_P", CountsPart, EventTimesPart, AggregatePart)


PART_TYPES: dict[str, type] = {c.kind: c for c in (CountsPart, EventTimesPart, AggregatePart)}


@dataclass
class Summary:
    """What a node sends back for one round: named parts, each judged by disclosure control."""

    parts: dict[str, Part] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats round-trip exactly through JSON in Python).

        Event-time columns become plain lists (`ndarray.tolist`, one C call per column), or
        packed arrays when 2-D floats: no Python-level loop per number on either side.
        """
        # Shallow on purpose: dataclasses.asdict deep-copies every row; the parts hold only JSON
        # types already, except event-time columns (arrays).
        out: dict[str, Any] = {}
        for name, p in self.parts.items():
            body = {f.name: getattr(p, f.name) for f in fields(p) if not f.metadata.get("local")}
            if isinstance(p, EventTimesPart):
                body["columns"] = {k: _wire(v) for k, v in p.columns.items()}
            out[name] = {"kind": p.kind, **body}
        return out

    def counts(self, name: str) -> CountsPart:
        """Part `name` as a counts part (MalformedSummary if it is missing or of another kind)."""
        return self._typed(name, CountsPart)

    def event_times(self, name: str) -> EventTimesPart:
        """Part `name` as an event-time table (MalformedSummary if missing or another kind)."""
        return self._typed(name, EventTimesPart)

    def _typed(self, name: str, kind: type[_P]) -> _P:
        part = self.parts.get(name)
        if not isinstance(part, kind):
            found = "missing" if part is None else f"a {part.kind} part"
            raise MalformedSummary(f"summary part {name!r} must be a {kind.kind} part ({found})")
        return part

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """The summary a node sent, checked: known kinds and fields of the right types, counts
        that are whole numbers >= 0 in cells that have every dim and count, event-time columns
        of equal length with finite numbers, finite aggregate values (else MalformedSummary
        says what and where). Whether the parts are the ones an analysis sends is its own
        `Analysis.check_summary`."""
        if not isinstance(data, dict):
            raise MalformedSummary("a summary is a mapping of part names to parts")
        parts: dict[str, Part] = {}
        for name, raw in data.items():
            parts[name] = _part(name, raw)
        return cls(parts=parts)


def _wire(column: np.ndarray) -> Any:
    """An event-time column's wire form: packed if a 2-D float block, else a JSON list."""
    return pack(column) if column.ndim == 2 and column.dtype.kind == "f" else column.tolist()


def _part(name: str, raw: Any) -> Part:
    """One part from its wire form, or MalformedSummary naming the part."""
    if not isinstance(raw, dict):
        raise MalformedSummary(f"summary part {name!r} is not a mapping")
    body = dict(raw)
    kind = body.pop("kind", None)
    if not isinstance(kind, str) or kind not in PART_TYPES:
        shown = repr(kind)[:40]
        raise MalformedSummary(f"summary part {name!r} has unknown kind {shown}")
    if kind == EventTimesPart.kind and "rows" in body:
        raise MalformedSummary(
            f"summary part {name!r}: event-time tables travel as `columns`, not `rows` "
            "(the node runs an older ccdp; update it)"
        )
    local = [f.name for f in fields(PART_TYPES[kind]) if f.metadata.get("local")]
    if any(k in body for k in local):
        raise MalformedSummary(f"summary part {name!r}: node-side fields do not travel")
    try:
        part = PART_TYPES[kind](**body)
    except TypeError as exc:  # missing or unexpected fields
        raise MalformedSummary(f"summary part {name!r}: {exc}") from None
    except MalformedSummary as exc:
        raise MalformedSummary(f"summary part {name!r}: {exc}") from None
    where = f"summary part {name!r}"
    if isinstance(part, CountsPart):
        _check_counts(where, part)
    elif isinstance(part, EventTimesPart):
        _check_event_times(where, part)
    else:
        _whole(where, "n", part.n)
        _whole(where, "n_params", part.n_params)
        if not isinstance(part.values, dict):
            raise MalformedSummary(f"{where}: values must be a mapping of names to numbers")
        _check_finite(where, part.values)
    return part


def _is_whole(value: Any) -> bool:
    """A count as it travels: a JSON integer, never a bool, a fraction or a negative."""
    return type(value) is int and value >= 0


def _whole(where: str, key: str, value: Any) -> None:
    if not _is_whole(value):
        shown = repr(value)[:40]
        raise MalformedSummary(f"{where}: {key} must be a whole number >= 0, got {shown}")


def _names(where: str, key: str, value: Any) -> None:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise MalformedSummary(f"{where}: {key} must be a list of names")
    if len(set(value)) != len(value):
        raise MalformedSummary(f"{where}: {key} names a column twice")


def _check_counts(where: str, part: CountsPart) -> None:
    """Every cell has each dim (a label) and each count (a whole number, or null: suppressed)."""
    _names(where, "dims", part.dims)
    _names(where, "counts", part.counts)
    _whole(where, "withheld", part.withheld)
    if not isinstance(part.cells, list):
        raise MalformedSummary(f"{where}: cells must be a list of mappings")
    for i, cell in enumerate(part.cells):
        if not isinstance(cell, dict):
            raise MalformedSummary(f"{where}: cell {i} is not a mapping")
        missing = [k for k in (*part.dims, *part.counts) if k not in cell]
        if missing:
            raise MalformedSummary(f"{where}: cell {i} lacks {', '.join(missing)}")
        for d in part.dims:
            if isinstance(cell[d], dict | list):
                raise MalformedSummary(f"{where}: cell {i}, {d} must be a label, not a structure")
        for c in part.counts:
            if cell[c] is not None and not _is_whole(cell[c]):
                shown = repr(cell[c])[:40]
                raise MalformedSummary(
                    f"{where}: cell {i}, count {c} must be a whole number >= 0 (or null when "
                    f"suppressed), got {shown}"
                )


def _check_event_times(where: str, part: EventTimesPart) -> None:
    """Group sizes are counts; columns at most 2-D (their lengths are checked on construction)."""
    _names(where, "group_by", part.group_by)
    if not isinstance(part.time_unit, str):
        raise MalformedSummary(f"{where}: time_unit must be text")
    if not isinstance(part.group_sizes, dict):
        raise MalformedSummary(f"{where}: group_sizes must map group labels to counts")
    for group, size in part.group_sizes.items():
        _whole(where, f"group_sizes[{group[:40]!r}]", size)
    for key, col in part.columns.items():
        if col.ndim > 2:
            raise MalformedSummary(f"{where}: column {key!r} has {col.ndim} dimensions (at most 2)")


def _check_finite(where: str, value: Any) -> None:
    """Aggregate values are numbers, lists of numbers or mappings of them, all finite."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(f"{where}, {k}", v)
        return
    try:
        if isinstance(value, str) or value is None:
            raise TypeError
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise MalformedSummary(f"{where}: values must be numbers") from None
    if not np.isfinite(arr).all():
        raise MalformedSummary(f"{where}: values must be finite (no NaN or infinity)")


@dataclass(frozen=True)
class PartSpec:
    """What one part of an analysis's summary looks like, for checking an answer on receipt.

    `kind` the part's kind; for counts, `dims` and `counts` the exact columns; for event times,
    `group_by`, `columns` (besides `group` and `time`, exactly these), `count_columns` (whole
    numbers >= 0) and `widths` (values per row of 2-D columns). None: not checked. `optional`
    parts may be absent (a covariate's levels exist only where it is categorical)."""

    kind: Literal["counts", "event_times", "aggregate"]
    dims: tuple[str, ...] | None = None
    counts: tuple[str, ...] | None = None
    group_by: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    count_columns: tuple[str, ...] = ()
    widths: tuple[tuple[str, int], ...] = ()
    optional: bool = False


def check_parts(summary: Summary, expected: dict[str, PartSpec], analysis: str) -> None:
    """MalformedSummary unless `summary` has exactly the `expected` parts, each of its shape."""
    if not summary.parts:
        raise MalformedSummary(f"{analysis}: the summary is empty (it has no parts)")
    missing = [n for n, spec in expected.items() if not spec.optional and n not in summary.parts]
    if missing:
        raise MalformedSummary(f"{analysis}: the summary lacks part(s) {', '.join(missing)}")
    extra = [n[:40] for n in summary.parts if n not in expected]
    if extra:
        raise MalformedSummary(
            f"{analysis}: the summary has part(s) it does not send: {', '.join(extra)} "
            f"(expected {', '.join(expected)})"
        )
    for name, part in summary.parts.items():
        _check_shape(f"{analysis}: summary part {name!r}", part, expected[name])


def _check_shape(where: str, part: Part, spec: PartSpec) -> None:
    if part.kind != spec.kind:
        raise MalformedSummary(f"{where} is of kind {part.kind}, expected {spec.kind}")
    if isinstance(part, CountsPart):
        for key, want in (("dims", spec.dims), ("counts", spec.counts)):
            if want is not None and list(getattr(part, key)) != list(want):
                raise MalformedSummary(f"{where}: {key} must be {list(want)}")
        return
    if not isinstance(part, EventTimesPart):
        return
    if spec.group_by is not None and list(part.group_by) != list(spec.group_by):
        raise MalformedSummary(f"{where}: group_by must be {list(spec.group_by)}")
    if spec.columns is not None:
        wanted = {GROUP, TIME, *spec.columns}
        if set(part.columns) != wanted:
            raise MalformedSummary(
                f"{where}: columns must be {', '.join(sorted(wanted))}; "
                f"got {', '.join(sorted(k[:40] for k in part.columns))}"
            )
    for key in spec.count_columns:
        col = part.columns.get(key)
        if col is not None and col.size and (col.dtype.kind not in "iu" or col.min() < 0):
            raise MalformedSummary(f"{where}: column {key!r} must hold whole numbers >= 0")
    for key, width in spec.widths:
        col = part.columns.get(key)
        shape = (width,) if width else ()
        if col is not None and len(col) and col.shape[1:] != shape:
            raise MalformedSummary(
                f"{where}: column {key!r} has {col.shape[1:] or 1} values per row, "
                f"expected {width or 1}"
            )


class NodeData(Protocol):
    """What `local` may read at a node: the cohort-filtered analysis view and the denominators,
    the ledger keys of its records, and the node's disclosure context (policy and ledger), which
    analyses consult where they shape what they send (event-time grouping)."""

    node: str

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The analysis view (one row per tumour), restricted to the study's cohort."""
        ...

    def population(self) -> pd.DataFrame:
        """The node's population table (country, year, sex, age_group, population)."""
        ...

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        """Ledger keys (uint64) of the view rows at `index`, in the analysis's unit."""
        ...

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        """The Records of the view rows at `index` (each in part row `row`, default 0)."""
        ...

    @property
    def disclosure(self) -> DisclosureContext:
        """The node's disclosure policy and ledger, for analyses that shape their output."""
        ...


def make_records(data: NodeData, index: pd.Index, row: np.ndarray | None, unit: Unit) -> Records:
    """Records of view rows: their keys and, for tumours and specimens, their patients (see
    Records; specimens are judged by their children)."""
    keys = data.record_keys(index, unit)
    row = np.zeros(len(keys), dtype=np.int64) if row is None else row
    owners = data.record_keys(index, "patients") if unit != "patients" else None
    return Records(keys, row, owners, by_owner=unit == "specimens")


def specimen_keys(specimen_id: pd.Series) -> np.ndarray:
    """Ledger keys of specimen rows (their own key space, `s:`)."""
    text = "s:" + specimen_id.astype(str)
    return pd.util.hash_pandas_object(text, index=False).to_numpy().astype(np.uint64)


def ledger_keys(
    patient_id: pd.Series, tumour_id: pd.Series, first: pd.Series, unit: Unit
) -> np.ndarray:
    """One key per view row, in one key space for both units: a patient's first tumour is keyed
    by the patient, later tumours by themselves. So a tumour count and a patient count of the
    same cohort differ (as sets) by exactly the second tumours, which the ledger then sees."""
    pkey = pd.util.hash_pandas_object("p:" + patient_id.astype(str), index=False).to_numpy()
    if unit == "patients":
        return pkey.astype(np.uint64)
    tkey = pd.util.hash_pandas_object("t:" + tumour_id.astype(str), index=False).to_numpy()
    return np.where(first.to_numpy(dtype=bool), pkey, tkey).astype(np.uint64)


@dataclass
class FrameData:
    """NodeData over in-memory frames: for tests, notebooks and dry runs. Without `patient_id`
    and `tumour_id` columns every row is its own patient (keyed by its index)."""

    frame: pd.DataFrame
    population_frame: pd.DataFrame | None = None
    node: str = "local"
    context: DisclosureContext | None = None

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.frame if columns is None else self.frame[columns]

    def population(self) -> pd.DataFrame:
        if self.population_frame is None:
            raise LookupError(f"node {self.node} has no population table")
        return self.population_frame

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        rows = self.frame.loc[index]
        if unit == "specimens":
            if "specimen_id" not in rows:
                raise ValueError("unit specimens: the frame has no specimen_id column")
            return specimen_keys(rows["specimen_id"])
        if "patient_id" in rows:
            tumour = rows["tumour_id"] if "tumour_id" in rows else pd.Series(index, index=index)
            first = rows["tumour_seq"] == 1 if "tumour_seq" in rows else pd.Series(True, index)
            return ledger_keys(rows["patient_id"], tumour, first, unit)
        ids = pd.Series(index.astype(str), index=index)
        return ledger_keys(ids, ids, pd.Series(True, index=index), unit)

    def records(
        self, index: pd.Index, row: np.ndarray | None = None, unit: Unit = "tumours"
    ) -> Records:
        return make_records(self, index, row, unit)

    @property
    def disclosure(self) -> DisclosureContext:
        if self.context is None:
            from ccdp.disclosure.context import DisclosureContext

            self.context = DisclosureContext()
        return self.context


@dataclass
class Continue:
    """Another round is needed: send `request` to the nodes; `state` stays at the coordinator."""

    request: dict[str, Any]
    state: Any = None


@dataclass
class Done:
    """The analysis has finished with `result`."""

    result: AnalysisResult


P = TypeVar("P", bound=AnalysisParams)


class Analysis(ABC, Generic[P]):
    """An analysis plug-in. Subclasses set `name` and `params_model` and implement the three steps.

    Generic over its params model `P`, so that each plug-in's steps take its own params type.

    `local` receives the node's data (`NodeData`: the cohort-filtered analysis view, one row per
    tumour, see ccdp.cohort, and the population table) and a per-study `cache` dict that lives
    across rounds at that node, so multi-round analyses prepare their arrays once.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[AnalysisParams]]

    def columns(self, params: P) -> list[str] | None:
        """View columns `local` needs (None: all); lets the node read only what it must."""
        return None

    def check_cohort(self, variables: set[str]) -> None:
        """Raise CohortError if a cohort on these variables would make the answer wrong."""
        return None

    def view_rows(self, params: P) -> Rows:
        """What a row of the view `local` reads is: a tumour, or a specimen (`unit:
        specimens`), which only a count may read."""
        return "tumours"

    def check_request(self, params: P, variables: set[str]) -> None:
        """CohortError unless a cohort on `variables` suits this analysis with `params`:
        `check_cohort`, and specimen variables only on specimen rows."""
        self.check_cohort(variables)
        if self.view_rows(params) == "specimens":
            return
        from ccdp.cohort.spec import CohortError
        from ccdp.cohort.view import specimen_only

        used = specimen_only(variables | set(self.columns(params) or []))
        if used:
            raise CohortError(
                f"{', '.join(used)}: a specimen variable; only a count or crosstab with "
                "unit: specimens reads specimen rows"
            )

    def start(self, params: P) -> Continue:
        """The first request sent to the nodes."""
        return Continue(request={})

    def summary_parts(self, params: P, request: dict[str, Any]) -> dict[str, PartSpec] | None:
        """The parts `local` sends for `request`, so a summary can be checked where it is
        received (the hub refuses one of the wrong shape before storing it); None: not said."""
        return None

    def check_summary(self, summary: Summary, params: P, request: dict[str, Any]) -> None:
        """MalformedSummary unless `summary` is one `local` could have sent for `request`: not
        empty and, where the analysis says (`summary_parts`), exactly its parts and shapes."""
        expected = self.summary_parts(params, request)
        if expected is None:
            if not summary.parts:
                raise MalformedSummary(f"{self.name}: the summary is empty (it has no parts)")
            return
        check_parts(summary, expected, self.name)

    @abstractmethod
    def local(
        self,
        data: NodeData,
        params: P,
        request: dict[str, Any],
        cache: dict[str, Any],
    ) -> Summary:
        """Run at a node on its own data; returns only aggregates."""

    @abstractmethod
    def combine(
        self,
        params: P,
        state: Any,
        summaries: dict[str, Summary],
    ) -> Continue | Done:
        """Run at the coordinator on the summaries of the nodes that answered (keyed by node)."""

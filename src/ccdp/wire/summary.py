"""A node's summary on the wire: typed parts, their packed form and their checks on receipt.

A Summary is made of typed parts so that disclosure control can judge any analysis's output
without knowing the analysis: `CountsPart` (cell counts: small-cell and secondary suppression),
`EventTimesPart` (event-time tables: time grid and group-size rules) and `AggregatePart` (model sums
such as a gradient and Hessian: minimum cohort size and parameter count). Fields marked `LOCAL`
(the node-side `Records`) never go on the wire; `Summary.from_dict` and `check_parts` refuse any
summary whose form is wrong wherever one is received.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from ccdp.wire.errors import MalformedSummary
from ccdp.wire.records import Records

LOCAL = {"local": True}  # dataclass field metadata: kept at the node, never sent


@dataclass
class CountsPart:
    """A table of counts. `cells` rows hold the grouping values (`dims`) and count columns
    (`counts`); disclosure suppresses small cells and applies secondary suppression over margins.
    `withheld` counts suppressed cells that are not listed (their labels would say too much);
    `noise` is the largest change the node made to any count (0: exact; cell-key perturbation,
    `disclosure.perturb`), sent only when not 0; `records` (node-side) says which records each
    cell counts."""

    kind: ClassVar[Literal["counts"]] = "counts"
    dims: list[str]
    counts: list[str]
    cells: list[dict[str, Any]]
    withheld: int = 0
    noise: int = field(default=0, metadata={"omit_zero": True})
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
            body = {
                f.name: getattr(p, f.name)
                for f in fields(p)
                if not f.metadata.get("local")
                and not (f.metadata.get("omit_zero") and not getattr(p, f.name))
            }
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
    _whole(where, "noise", part.noise)
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

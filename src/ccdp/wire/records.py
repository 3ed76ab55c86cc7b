"""Which records a summary part counts: node-side sets that never travel, and their keys.

Every part built at a node says, node-side only, which records each of its rows counts
(`Records`): the disclosure gate needs the sets, not only their sizes, to refuse a release that
differs from an earlier one by a few children. Ledger keys are uint64 hashes of pseudonymised
record ids in one key space per unit (`ledger_keys`, `specimen_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Unit = Literal["tumours", "patients", "specimens"]


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
    compares children, not samples.

    The arrays are held read-only and the sets derived from them (`sets`, `union`) are
    computed once per Records object: a model that sends the same Records every round (its
    rows do not change between rounds) has its record set built once per study, while a
    round whose rows differ builds new Records, whose sets are computed afresh.

    `summed` (perturbed counts only): the rows' sizes and cell keys computed by one aggregate
    at the node instead of the record sets (`keys` and `row` then empty): under `counts:
    perturbed` no release decision needs the sets. Every set-based method then sees no
    records, so such a part can only pass the gate's perturbed path."""

    keys: np.ndarray
    row: np.ndarray
    owners: np.ndarray | None = None
    by_owner: bool = False
    summed: CellSums | None = None
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.keys = _frozen(self.keys, np.uint64)
        self.row = _frozen(self.row, np.int64)
        if self.owners is not None:
            self.owners = _frozen(self.owners, np.uint64)
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
        if "union" not in self._memo:
            pairs = self._pairs(np.where(self.row >= 0, 0, -1))
            self._memo["union"] = _frozen(np.unique(pairs[1]), np.uint64)
        union: np.ndarray = self._memo["union"]
        return union

    def single_row(self) -> Records:
        """The same records, all counted in one row (a model over a table's rows); the same
        object on every call, so its sets are computed once."""
        if "single_row" not in self._memo:
            self._memo["single_row"] = replace(self, row=np.where(self.row >= 0, 0, -1))
        single: Records = self._memo["single_row"]
        return single

    def remap(self, new_row: np.ndarray) -> Records:
        """The same records with row i renamed new_row[i] (-1 drops it)."""
        new_row = np.asarray(new_row, dtype=np.int64)
        row = np.full(self.row.shape, -1, dtype=np.int64)
        counted = self.row >= 0
        row[counted] = new_row[self.row[counted]]
        return replace(self, row=row)


@dataclass(frozen=True)
class CellSums:
    """Node-side only: per row of a count part, the count it states (`sizes`: distinct records;
    samples where records are judged by owner) and its cell key (`cell_keys`: the sum modulo
    the key space of the record keys of the set the cell is keyed by, with the node's `salt`),
    as `disclosure.perturb.cell_keys` computes them from `Records.sets` (or `owner_sets`)."""

    sizes: np.ndarray
    cell_keys: np.ndarray
    salt: int

    def __post_init__(self) -> None:
        sizes = _frozen(self.sizes, np.int64)
        keys = _frozen(self.cell_keys, np.int64)
        if sizes.shape != keys.shape or sizes.ndim != 1:
            raise ValueError("cell sums: one size and one key per row")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "cell_keys", keys)

    @classmethod
    def records(cls, sizes: np.ndarray, cell_keys: np.ndarray, salt: int) -> Records:
        """Records of a part described by its sums alone (no sets)."""
        empty = np.zeros(0, dtype=np.uint64)
        return Records(empty, np.zeros(0, dtype=np.int64), summed=cls(sizes, cell_keys, salt))


def _frozen(values: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only view of `values` as `dtype` (the caller's array stays writable)."""
    out: np.ndarray = np.asarray(values, dtype=dtype).view()
    out.flags.writeable = False
    return out


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


def _hash_text(prefix: str, ids: pd.Series) -> np.ndarray:
    """pandas' hash of `prefix + id` for each id (uint64): the values of
    `hash_pandas_object(prefix + ids, index=False)`, without its factorising pass (ids are
    mostly distinct, so it only costs)."""
    import pandas as pd

    if not pd.api.types.is_string_dtype(ids):  # text already: no second conversion pass
        ids = ids.astype(str)
    text = (prefix + ids).to_numpy(dtype=object)
    return pd.util.hash_array(text, categorize=False).astype(np.uint64, copy=False)


def specimen_keys(specimen_id: pd.Series) -> np.ndarray:
    """Ledger keys of specimen rows (their own key space, `s:`)."""
    return _hash_text("s:", specimen_id)


def ledger_keys(
    patient_id: pd.Series, tumour_id: pd.Series, first: pd.Series, unit: Unit
) -> np.ndarray:
    """One key per view row, in one key space for both units: a patient's first tumour is keyed
    by the patient, later tumours by themselves. So a tumour count and a patient count of the
    same cohort differ (as sets) by exactly the second tumours, which the ledger then sees."""
    pkey = _hash_text("p:", patient_id)
    if unit == "patients":
        return pkey
    is_first = first.to_numpy(dtype=bool)
    if is_first.all():
        return pkey
    tkey = _hash_text("t:", tumour_id[~is_first])
    out = pkey.copy()
    out[~is_first] = tkey
    return out

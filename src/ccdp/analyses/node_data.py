"""What an analysis's `local` step may read at a node (`NodeData`), and the in-memory kind
(`FrameData`) that tests, notebooks and dry runs use; the node's own lives in
ccdp.federation.node.local (`StoreData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ccdp.disclosure.context import DisclosureContext
from ccdp.wire.records import Records, Unit, ledger_keys, specimen_keys


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


@runtime_checkable
class SummedCounts(Protocol):
    """A NodeData that can count cells in one aggregate where it holds the data (a node's
    store): for each grouping, per cell its count and cell key (`CellSums`), without reading
    the view's rows or building record sets. Used only under `counts: perturbed`, where no
    release decision needs the sets."""

    def count_cells(
        self, groupings: list[list[str]], unit: Unit, salt: int
    ) -> list[pd.DataFrame] | None:
        """For each grouping, a frame of its cells: the grouping's columns, `n` (the count of
        `unit`) and `cell_key` (sum of the record keys of the cell's set, mod the key space);
        None where this data cannot (then the sets are built from the view's rows)."""
        ...


def make_records(data: NodeData, index: pd.Index, row: np.ndarray | None, unit: Unit) -> Records:
    """Records of view rows: their keys and, for tumours and specimens, their patients (see
    Records; specimens are judged by their children)."""
    keys = data.record_keys(index, unit)
    row = np.zeros(len(keys), dtype=np.int64) if row is None else row
    owners = data.record_keys(index, "patients") if unit != "patients" else None
    return Records(keys, row, owners, by_owner=unit == "specimens")


@dataclass
class FrameData:
    """NodeData over in-memory frames: for tests, notebooks and dry runs. Without `patient_id`
    and `tumour_id` columns every row is its own patient (keyed by its index)."""

    frame: pd.DataFrame
    population_frame: pd.DataFrame | None = None
    node: str = "local"
    context: DisclosureContext | None = None
    _keys: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def view(self, columns: list[str] | None = None) -> pd.DataFrame:
        return self.frame if columns is None else self.frame[columns]

    def population(self) -> pd.DataFrame:
        if self.population_frame is None:
            raise LookupError(f"node {self.node} has no population table")
        return self.population_frame

    def record_keys(self, index: pd.Index, unit: Unit = "tumours") -> np.ndarray:
        """Keys of the rows at `index`: the whole frame's keys are computed once per unit (the
        frame is not to be changed once given) and gathered by position."""
        if not self.frame.index.is_unique:
            return self._keys_of(self.frame.loc[index], index, unit)
        # without patient ids every row is its own patient, and without tumour_seq every
        # tumour is its patient's first: one key per row in both units
        same = unit != "specimens" and (
            "patient_id" not in self.frame or "tumour_seq" not in self.frame
        )
        memo = f"{id(self.frame)}:{'patients' if same else unit}"
        if memo not in self._keys:
            self._keys[memo] = self._keys_of(self.frame, self.frame.index, unit)
        if index is self.frame.index or index.equals(self.frame.index):
            return self._keys[memo]
        positions = self.frame.index.get_indexer(index)
        if (positions < 0).any():
            raise KeyError("record_keys: rows not in the frame")
        return self._keys[memo][positions]

    @staticmethod
    def _keys_of(rows: pd.DataFrame, index: pd.Index, unit: Unit) -> np.ndarray:
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
            self.context = DisclosureContext()
        return self.context

"""REDCap flat exports: one CSV where repeating instruments add rows under their record.

In a flat export the record's base row holds the non-repeating forms and each repeat-instrument
row (`redcap_repeat_instrument`, `redcap_repeat_instance`) holds only that instrument's fields.
A relapse row therefore lacks the tumour id that sits on its record's base row; with
`inherit: true` each repeat row takes its record's base-row value for every column it leaves
empty, so a mapping can filter `redcap_repeat_instrument == relapse` and still see the keys.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ccdp.ingest.readers.base import SOURCE_ROW, ReaderError, ReaderOptions
from ccdp.ingest.readers.delimited import read_delimited

INSTRUMENT = "redcap_repeat_instrument"
INSTANCE = "redcap_repeat_instance"
EVENT = "redcap_event_name"


def read_redcap(path: Path, opts: ReaderOptions) -> pd.DataFrame:
    """The export as strings, repeat rows completed from their record's base row."""
    frame = read_delimited(path, opts)
    data_columns = [c for c in frame.columns if c != SOURCE_ROW]
    record_id = opts.record_id or data_columns[0]
    if record_id not in frame.columns:
        raise ReaderError(
            f"{path}: REDCap record id column {record_id!r} not found (columns: "
            + ", ".join(data_columns[:12])
            + ")"
        )
    if INSTRUMENT not in frame.columns or not opts.inherit:
        return frame
    return _inherit_base_values(frame, record_id)


def _inherit_base_values(frame: pd.DataFrame, record_id: str) -> pd.DataFrame:
    is_base = frame[INSTRUMENT].isna().to_numpy()
    if is_base.all() or not is_base.any():
        return frame
    base = frame.loc[is_base].drop_duplicates(record_id).set_index(record_id)
    repeat = ~is_base
    keys = frame.loc[repeat, record_id]
    out = frame.copy()
    for col in frame.columns:
        if col in (record_id, SOURCE_ROW) or col.startswith("redcap_") or col.endswith("_complete"):
            continue
        current = out.loc[repeat, col]
        inherited = base[col].reindex(keys).to_numpy()
        out.loc[repeat, col] = current.where(
            current.notna(), pd.Series(inherited, index=current.index)
        )
    return out


def instruments(frame: pd.DataFrame) -> list[str | None]:
    """Repeat instruments present (None stands for the base rows), in order of appearance."""
    if INSTRUMENT not in frame.columns:
        return [None]
    values = frame[INSTRUMENT].drop_duplicates().tolist()
    return [None if v is None else str(v) for v in values]

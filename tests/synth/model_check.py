"""An independent check of native CSV folders against the data model (used by the synth tests).

It reads the files with pandas as strings and applies the model's rules field by field: required,
type (integer, float, boolean, ISO date, partial date), allowed values, min/max, primary and foreign
keys, and the date order a registry must respect. Returns a list of human-readable violations.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ccdp.model import load_model

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH = re.compile(r"^\d{4}-\d{2}$")


def _bad_dates(s: pd.Series, partial: bool) -> pd.Series:
    full = s.str.match(DATE)
    parsed = pd.to_datetime(s.where(full), format="%Y-%m-%d", errors="coerce")
    ok = full & parsed.notna()
    if partial:
        month = s.str.match(MONTH)
        ok |= month & pd.to_datetime(s.where(month), format="%Y-%m", errors="coerce").notna()
    return ~ok


def check_folder(folder: Path) -> list[str]:
    """Every violation of the model in one country's native folder."""
    model = load_model()
    problems: list[str] = []
    frames: dict[str, pd.DataFrame] = {}
    for table in model.tables.values():
        path = folder / f"{table.name}.csv"
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        frames[table.name] = df
        expected = [f.name for f in table.input_fields]
        if list(df.columns) != expected:
            problems.append(f"{path}: columns {list(df.columns)} != {expected}")
            continue
        for f in table.input_fields:
            s = df[f.name]
            present = s != ""
            if f.required and (~present).any():
                problems.append(f"{path.name}: {f.name} empty in {(~present).sum()} rows")
            v = s[present]
            if f.type == "integer":
                bad = ~v.str.match(r"^-?\d+$")
            elif f.type == "float":
                bad = pd.to_numeric(v, errors="coerce").isna()
            elif f.type == "boolean":
                bad = ~v.isin(["true", "false"])
            elif f.type in ("date", "partial_date"):
                bad = _bad_dates(v, f.type == "partial_date")
            else:
                bad = pd.Series(False, index=v.index)
            if bad.any():
                problems.append(f"{path.name}: {f.name} bad {f.type} e.g. {v[bad].iloc[0]!r}")
                continue
            if f.allowed is not None:
                allowed = {str(a) for a in f.allowed}
                out = ~v.isin(allowed)
                if out.any():
                    problems.append(f"{path.name}: {f.name} value {v[out].iloc[0]!r} not allowed")
            if f.min is not None or f.max is not None:
                num = pd.to_numeric(v)
                if f.min is not None and (num < f.min).any():
                    problems.append(f"{path.name}: {f.name} below {f.min}")
                if f.max is not None and (num > f.max).any():
                    problems.append(f"{path.name}: {f.name} above {f.max}")
        if df.duplicated(table.primary_key).any():
            problems.append(f"{path.name}: duplicate primary key {table.primary_key}")
    for table in model.tables.values():
        df = frames.get(table.name)
        for col, target in table.foreign_keys.items():
            t_table, t_col = target.split(".")
            if df is not None and t_table in frames:
                missing = ~df[col].isin(set(frames[t_table][t_col]))
                if missing.any():
                    problems.append(
                        f"{table.name}.{col}: {missing.sum()} rows refer to no {target}"
                    )
    if "patient" in frames and (frames["patient"].country != folder.name).any():
        problems.append(f"patient.country differs from the folder name {folder.name}")
    if {"patient", "tumour", "event", "treatment"} <= set(frames):
        problems += _date_order(frames)
    return problems


def _date_order(frames: dict[str, pd.DataFrame]) -> list[str]:
    out: list[str] = []
    p = frames["patient"].copy()
    birth = p.birth_date.where(p.birth_date.str.len() == 10, p.birth_date + "-01")
    p["birth"] = pd.to_datetime(birth, errors="coerce")
    p["last"] = pd.to_datetime(p.last_contact_date, errors="coerce")
    p["death"] = pd.to_datetime(p.death_date.replace("", None), errors="coerce")
    dead = p.vital_status == "dead"
    if (dead != p.death_date.ne("")).any():
        out.append("patient: death_date present iff vital_status is dead")
    if (p.loc[dead, "death"] != p.loc[dead, "last"]).any():
        out.append("patient: last_contact_date != death_date for the dead")
    if (p.cause_of_death.ne("") & ~dead).any():
        out.append("patient: cause_of_death for a living patient")
    t = frames["tumour"].merge(p[["patient_id", "birth", "last"]], on="patient_id")
    t["dx"] = pd.to_datetime(t.diagnosis_date, errors="coerce")
    if (t.dx < t.birth).any():
        out.append("tumour: diagnosis before birth")
    if (t.dx > t["last"]).any():
        out.append("tumour: diagnosis after last contact")
    fl = pd.to_datetime(t.frontline_end_date.replace("", None), errors="coerce")
    if ((fl < t.dx) | (fl > t["last"])).any():
        out.append("tumour: frontline_end_date outside diagnosis..last contact")
    e = frames["event"].merge(t[["tumour_id", "dx", "last"]], on="tumour_id")
    ed = pd.to_datetime(e.event_date, errors="coerce")
    if ((ed < e.dx) | (ed > e["last"])).any():
        out.append("event: event_date outside diagnosis..last contact")
    if (e.relapse_site.ne("") & e.event_type.ne("relapse")).any():
        out.append("event: relapse_site on a non-relapse event")
    sex = e.merge(frames["tumour"][["tumour_id", "patient_id"]], on="tumour_id").merge(
        p[["patient_id", "sex"]], on="patient_id"
    )
    if ((sex.relapse_site == "testis") & (sex.sex == "female")).any():
        out.append("event: testicular relapse in a girl")
    ts = t.merge(p[["patient_id", "sex"]], on="patient_id")
    if (ts.topography.str.startswith("C62") & (ts.sex == "female")).any() or (
        ts.topography.str.startswith("C56") & (ts.sex == "male")
    ).any():
        out.append("tumour: gonadal site inconsistent with sex")
    x = frames["treatment"].merge(t[["tumour_id", "dx", "last"]], on="tumour_id")
    start = pd.to_datetime(x.start_date.replace("", None), errors="coerce")
    end = pd.to_datetime(x.end_date.replace("", None), errors="coerce")
    if ((start < x.dx) | (start > x["last"]) | (end < start) | (end > x["last"])).any():
        out.append("treatment: dates outside diagnosis..last contact or end before start")
    return out

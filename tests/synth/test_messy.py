"""Messy exports: each country's own style, and an error list that is complete and exact.

The test reads every messy export back with nothing but the documented style table
(synth/data/messy_styles.yaml), converts it to model values, and compares it cell by cell with the
native export drawn from the same seed: the cells that differ must be exactly the listed errors,
and the listed duplicate rows exactly the extra rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from ccdp.model import load_model
from ccdp.synth import generate
from ccdp.synth.messy import styles

COUNTRIES = ["FR", "DE", "IT", "PL", "BR", "KE"]
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")
REPEATING = {"clinical_events": "event", "treatments": "treatment", "trial_enrolment":
             "trial_enrolment", "biomarkers": "biomarker", "specimens": "specimen"}  # fmt: skip


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    base = tmp_path_factory.mktemp("messy")
    kw = {"countries": COUNTRIES, "patients": 8000, "seed": 9, "with_identifiers": True}
    generate(base / "native", **kw)
    result = generate(base / "messy", format="messy", **kw)
    return base, result.truth()


def _raw_tables(folder: Path, code: str) -> dict[str, pd.DataFrame]:
    """Each model table as the registry wrote it (strings), with its file and 1-based rows."""
    st = styles()[code]
    out: dict[str, pd.DataFrame] = {}
    if st["writer"] == "xlsx":
        wb = load_workbook(folder / st["file"], read_only=True)
        for table, spec in st["files"].items():
            rows = list(wb[spec["file"]].iter_rows(values_only=True))
            df = pd.DataFrame(rows[1:], columns=rows[0]).map(_cell)
            out[table] = df.assign(
                __file=f"{code}/{st['file']}", __sheet=spec["file"], __row=np.arange(1, len(df) + 1)
            )
        return out
    if st["writer"] == "redcap":
        flat = _read_csv(folder / st["file"], st)
        flat["__file"] = f"{code}/{st['file']}"
        flat["__row"] = np.arange(1, len(flat) + 1)
        base = flat[flat.redcap_repeat_instrument == ""]
        out["patient"] = base
        out["tumour"] = base
        tumour_of = base.drop_duplicates("record_id").set_index("record_id")["tumour_id"]
        for instrument, table in REPEATING.items():
            part = flat[flat.redcap_repeat_instrument == instrument].copy()
            part["tumour_id"] = part.record_id.map(tumour_of)
            out[table] = part
        pop = _read_csv(folder / st["files"]["population"]["file"], st)
        out["population"] = pop.assign(
            __file=f"{code}/population.csv", __row=np.arange(1, len(pop) + 1)
        )
        return out
    for table, spec in st["files"].items():
        df = _read_csv(folder / spec["file"], st)
        out[table] = df.assign(__file=f"{code}/{spec['file']}", __row=np.arange(1, len(df) + 1))
    return out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _read_csv(path: Path, st: dict) -> pd.DataFrame:
    return pd.read_csv(path, sep=st["sep"], encoding=st["encoding"], dtype=str,
                       keep_default_na=False)  # fmt: skip


def _parse_date(raw: pd.Series, st: dict) -> pd.Series:
    if st["date"] == "excel_serial":
        num = pd.to_numeric(raw, errors="coerce")
        days = EXCEL_EPOCH + num.fillna(0).astype(np.int64).to_numpy().astype("timedelta64[D]")
        iso = pd.Series(days.astype(str), index=raw.index)
        return iso.where(num.notna(), "INVALID:" + raw)
    full = pd.to_datetime(raw, format=st["date"], errors="coerce")
    month = pd.to_datetime(raw, format=st["month_date"], errors="coerce")
    iso = full.dt.strftime("%Y-%m-%d").where(full.notna(), month.dt.strftime("%Y-%m"))
    return iso.where(iso.notna(), "INVALID:" + raw)


def _to_model(table: str, raw: pd.DataFrame, st: dict) -> pd.DataFrame:
    """Invert the style: local columns, codes, formats -> the model's native strings."""
    cols = st["files"][table]["columns"]
    out = pd.DataFrame(index=raw.index)
    values = st.get("values", {})
    for f in load_model().table(table).input_fields:
        if f.name not in cols or f"{table}.{f.name}" in st.get("drop", []):
            continue
        s = raw[cols[f.name]].astype(str)
        vmap = values.get(f"{table}.{f.name}", values.get(f.name)) or {}
        coded = f.allowed is not None or bool(vmap)
        missing = st["missing_coded"] if coded else st["missing"]
        empty = s == missing
        if vmap:
            s = s.map({v: k for k, v in vmap.items()}).fillna(s)
        if f.type in ("date", "partial_date"):
            s = _parse_date(s, st)
        if f.name == "morphology" and st["morphology"] != "separate":
            out["behaviour"] = s.str[-1].where(~empty, "")
            s = s.str.replace("/", "", regex=False).str[:4]
        if f.name == "topography" and st["topography"] == "compact":
            s = s.str[:3] + "." + s.str[3:]
        if f.type == "float":
            s = s.str.replace(st["decimal"], ".", regex=False)
        out[f.name] = s.where(~empty, "")
    return out


def _native(base: Path, code: str, table: str) -> pd.DataFrame:
    return pd.read_csv(base / "native" / code / f"{table}.csv", dtype=str, keep_default_na=False)


KEYS = {"patient": ["patient_id"], "tumour": ["tumour_id"], "event": ["event_id"],
        "treatment": ["treatment_id"], "trial_enrolment": ["patient_id", "trial"],
        "biomarker": ["tumour_id", "marker", "date"], "specimen": ["specimen_id"],
        "population": ["year", "sex", "age_group"]}  # fmt: skip


@pytest.mark.parametrize("code", COUNTRIES)
def test_messy_differs_from_native_exactly_by_the_listed_errors(drawn, code: str) -> None:
    base, truth = drawn
    st = styles()[code]
    errors = [e for e in truth["errors"] if e["country"] == code]
    kinds = {e["error_type"] for e in errors}
    assert {
        "impossible_date",
        "invalid_code",
        "sex_site_conflict",
        "duplicate",
        "date_order",
    } <= kinds
    raw = _raw_tables(base / "messy" / code, code)
    listed = {
        (e["file"], e.get("sheet", ""), e["row"], e["field"])
        for e in errors
        if e["error_type"] != "duplicate"
    }
    dup_rows = {
        (e["file"], e.get("sheet", ""), e["row"]) for e in errors if e["error_type"] == "duplicate"
    }
    found: set[tuple[str, str, int, str]] = set()
    found_dups: set[tuple[str, str, int]] = set()
    for table in load_model().table_names:
        r = raw[table]
        if "__sheet" not in r:
            r = r.assign(__sheet="")
        loc = pd.Series(
            list(zip(r["__file"], r["__sheet"], r["__row"], strict=True)), index=r.index
        )
        is_dup = loc.isin(dup_rows)
        visible = [c for c in r.columns if not c.startswith("__")]
        # a listed duplicate is an exact copy of the row before it
        prev = r[visible].shift(1)
        exact = (r[visible] == prev).all(axis=1)
        if table in ("patient", "event"):
            found_dups |= set(loc[exact])
        kept = r[~is_dup]
        model = _to_model(table, kept, st)
        native = _native(base, code, table)
        if "country" in native and "country" not in model:
            model["country"] = code
        model = model[[c for c in native.columns if c in model]]
        for c in ("__file", "__sheet", "__row"):
            model[c] = kept[c].to_numpy() if c in kept else ""
        if st["writer"] == "redcap":
            model = model.set_index(KEYS[table]).loc[native.set_index(KEYS[table]).index]
            model = model.reset_index()[[*native.columns, "__file", "__sheet", "__row"]]
        files, sheets, rows = (model[c].to_numpy() for c in ("__file", "__sheet", "__row"))
        model = model.drop(columns=["__file", "__sheet", "__row"])
        assert len(model) == len(native), table
        cols = st["files"][table]["columns"]
        for col in model.columns:
            if col in KEYS[table] and st["writer"] == "redcap":
                continue
            a, b = model[col].to_numpy(dtype=object), native[col].to_numpy(dtype=object)
            fdef = load_model().table(table).field(col)
            if fdef.type == "float":
                x = pd.to_numeric(pd.Series(a), errors="coerce").to_numpy()
                y = pd.to_numeric(pd.Series(b), errors="coerce").to_numpy()
                diff = ~((np.isnan(x) & np.isnan(y)) | np.isclose(x, y))
            else:
                diff = a != b
            if col not in cols and col != "behaviour":
                assert not diff.any(), (table, col)  # a field the registry does not export
                continue
            source = cols[col] if col in cols else cols["morphology"]
            hits = zip(files[diff], sheets[diff], rows[diff], strict=True)
            found |= {(f, s, int(n), source) for f, s, n in hits}
    assert found == listed
    assert found_dups == dup_rows


def test_listed_rows_hold_the_injected_values(drawn) -> None:
    base, truth = drawn
    assert truth["errors"]
    for code in COUNTRIES:
        raw = _raw_tables(base / "messy" / code, code)
        cells = {}
        for r in raw.values():
            for rec in r.to_dict("records"):
                for k, v in rec.items():
                    cells[(rec["__file"], rec.get("__sheet", ""), rec["__row"], k)] = v
        for e in (e for e in truth["errors"] if e["country"] == code):
            key = (e["file"], e.get("sheet", ""), e["row"], e["field"])
            assert cells[key] == _cell(e["value"]), e
            assert {"country", "file", "row", "field", "model_field", "error_type",
                    "expected_edit"} <= set(e)  # fmt: skip


def test_each_country_has_its_own_style(drawn) -> None:
    base, _ = drawn
    m = base / "messy"
    assert (m / "IT" / "registro_tumori_pediatrici.xlsx").exists()
    assert load_workbook(m / "IT" / "registro_tumori_pediatrici.xlsx", read_only=True).sheetnames[
        :2
    ] == ["Pazienti", "Tumori"]
    header = (m / "KE" / "redcap_export.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["record_id", "redcap_repeat_instrument", "redcap_repeat_instance"]
    assert (m / "KE" / "data_dictionary.csv").exists()
    fr = (m / "FR" / "tumeurs.csv").read_bytes().decode("cp1252")
    assert fr.startswith("num_tumeur;num_patient;date_diagnostic") and "/3;" in fr
    de = pd.read_csv(m / "DE" / "tumoren.csv", sep=";", dtype=str, encoding="utf-8-sig")
    assert de.Morphologie.str.fullmatch(r"\d{5}").mean() > 0.99
    assert de.Topographie.str.fullmatch(r"C\d{3}").mean() > 0.99
    pl = pd.read_csv(m / "PL" / "pacjenci.csv", dtype=str, keep_default_na=False)
    assert set(pl.plec) == {"M", "K"} and {"imie", "nazwisko", "pesel"} <= set(pl.columns)
    for code in COUNTRIES:
        note = (m / code / "README.txt").read_text()
        assert "error" not in note.lower()


def test_same_seed_gives_identical_messy_bytes(tmp_path: Path) -> None:
    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip

    kw = {"countries": "IT,KE,FR", "patients": 900, "seed": 5, "format": "messy",
          "with_identifiers": True}  # fmt: skip
    generate(tmp_path / "a", **kw)
    generate(tmp_path / "b", **kw)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert (
        any(d.get("differences") for d in truth["cross_border_duplicates"])
        or not truth["cross_border_duplicates"]
    )

"""`--format messy`: each country exports in its own style (data/messy_styles.yaml), with a small
rate of real errors whose file, row and field are listed in truth.json.

Rendering is column-wise (pandas/Arrow); rows are tracked through duplication and the REDCap
flattening by hidden `__i_<table>` columns, so every injected error's final row number is exact.
"""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ccdp.model import load_model
from ccdp.synth.params import read_data_yaml

ERROR_RATE = 0.002  # share of rows per error kind and table
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")
REDCAP_ORDER = ("registration", "clinical_events", "treatments", "trial_enrolment", "biomarkers",
                "specimens")  # fmt: skip


@cache
def styles() -> dict[str, Any]:
    return read_data_yaml("messy_styles.yaml")


# -- rendering -------------------------------------------------------------------------------------


def _format_dates(iso: pd.Series, fmt: str, month_fmt: str) -> pd.Series:
    """ISO dates (YYYY-MM-DD, or YYYY-MM for a withheld day) in the registry's format."""
    s = iso.astype("string")
    if fmt == "excel_serial":
        full = pd.to_datetime(s.where(s.str.len() == 10), format="%Y-%m-%d", errors="coerce")
        days = (full.to_numpy("datetime64[D]") - EXCEL_EPOCH).astype("timedelta64[D]")
        out = pd.Series(days.astype("int64"), index=iso.index).astype(object)
        return out.where(full.notna(), None)
    y, m, d = s.str.slice(0, 4), s.str.slice(5, 7), s.str.slice(8, 10)

    def build(f: str) -> pd.Series:
        out = pd.Series("", index=iso.index, dtype="string")
        for token in re.split(r"(%[dmY])", f):
            out = out + {"%d": d, "%m": m, "%Y": y}.get(token, token)
        return out

    res = build(fmt).where(s.str.len() == 10, build(month_fmt))
    return res.astype(object).where(s.notna(), None)


def _value_map(style: dict[str, Any], table: str, field: str) -> dict[str, str] | None:
    values = style.get("values", {})
    return values.get(f"{table}.{field}", values.get(field))


def render_table(
    name: str, table: pa.Table, style: dict[str, Any], identity: pa.Table | None
) -> pd.DataFrame:
    """One model table in the registry's columns, codes and formats (missing still None)."""
    spec = style["files"][name]
    cols: dict[str, str] = spec["columns"]
    df = table.to_pandas()
    tdef = load_model().table(name)
    out: dict[str, pd.Series] = {}
    for f in tdef.input_fields:
        if f"{name}.{f.name}" in style.get("drop", []) or f.name not in cols:
            continue
        s = df[f.name].astype(object).where(df[f.name].notna(), None)
        if f.type in ("date", "partial_date"):
            s = _format_dates(s, style["date"], style["month_date"])
        elif f.name == "morphology" and "behaviour" in df:
            beh = df["behaviour"].astype(str)
            s = {"slash": s + "/" + beh, "five": s + beh}.get(style["morphology"], s)
        elif f.name == "topography" and style["topography"] == "compact":
            s = s.str.replace(".", "", regex=False)
        elif f.type == "float" or (name == "population" and f.name == "population"):
            s = _format_number(df[f.name], style, integral=name == "population")
        elif f.type in ("integer", "boolean"):
            s = s.map(lambda v: None if v is None else str(v).lower())
        vmap = _value_map(style, name, f.name)
        if vmap:
            s = s.map(lambda v, m=vmap: m.get(str(v), v) if v is not None else None)
        out[cols[f.name]] = s
    frame = pd.DataFrame(out)
    if name == "patient" and identity is not None:
        frame = _add_identity(frame, cols["patient_id"], identity, style)
    frame[f"__i_{name}"] = np.arange(len(frame))
    frame["__dup"] = 0
    return frame


def _format_number(values: pd.Series, style: dict[str, Any], integral: bool) -> pd.Series:
    if style["writer"] == "xlsx":
        return values.astype(object).where(values.notna(), None)
    text = values.map(
        lambda v: None if pd.isna(v) else (f"{v:.0f}" if integral else repr(float(v)))
    )
    if style["decimal"] != ".":
        text = text.str.replace(".", style["decimal"], regex=False)
    return text.astype(object).where(values.notna(), None)


def _add_identity(
    frame: pd.DataFrame, key: str, identity: pa.Table, style: dict[str, Any]
) -> pd.DataFrame:
    names = style["identifiers"]
    ident = identity.to_pandas().set_index("patient_id")
    pos = frame.columns.get_loc(key) + 1
    for col in ("given_name", "family_name", "national_id"):
        values = frame[key].map(ident[col]).where(lambda v: v != "", None)
        frame.insert(pos, names[col], values)
        pos += 1
    return frame


# -- errors ----------------------------------------------------------------------------------------


def _bad_date(style: dict[str, Any], year: int, rng: np.random.Generator) -> str:
    """A date that cannot exist (30 February, 31 April, month 13), in the registry's format."""
    d, m = [("30", "02"), ("31", "04"), ("31", "06"), ("31", "09"), ("15", "13")][
        int(rng.integers(0, 5))
    ]
    fmt = "%d/%m/%Y" if style["date"] == "excel_serial" else style["date"]
    return fmt.replace("%d", d).replace("%m", m).replace("%Y", f"{year:04d}")


def _render_date(style: dict[str, Any], day: np.datetime64) -> Any:
    if style["date"] == "excel_serial":
        return int((day.astype("datetime64[D]") - EXCEL_EPOCH).astype(np.int64))
    return day.astype("datetime64[D]").astype(datetime).strftime(style["date"])


def _pick(rng: np.random.Generator, candidates: np.ndarray, used: set[int], k: int) -> list[int]:
    free = np.array([c for c in candidates.tolist() if c not in used], dtype=np.int64)
    if len(free) == 0 or k == 0:
        return []
    chosen = sorted(rng.choice(free, size=min(k, len(free)), replace=False).tolist())
    used.update(chosen)
    return chosen


def inject_errors(
    rng: np.random.Generator, frames: dict[str, pd.DataFrame], per: dict[str, pa.Table],
    style: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """Plant real errors in the rendered frames; return them (row still the frame index)."""
    cols = {t: style["files"][t]["columns"] for t in style["files"]}
    pat = per["patient"].to_pandas()
    tum = per["tumour"].to_pandas().merge(pat[["patient_id", "sex", "birth_date"]], on="patient_id")
    ev = (
        per["event"]
        .to_pandas()
        .merge(tum[["tumour_id", "diagnosis_date", "sex"]], on="tumour_id", how="left")
    )
    used: dict[str, set[int]] = {t: set() for t in frames}
    errors: list[dict[str, Any]] = []

    def k_of(table: str) -> int:
        return max(1, round(ERROR_RATE * len(frames[table])))

    def plant(table, idx, field, value, etype, edit, edit_id, original=None):
        col = cols[table][field]
        original = frames[table].at[idx, col] if original is None else original
        frames[table].at[idx, col] = value
        errors.append({
            "table": table, "index": int(idx), "field": col, "model_field": f"{table}.{field}",
            "error_type": etype, "value": value, "original": original,
            "expected_edit": edit, "edit_id": edit_id,
        })  # fmt: skip

    # impossible dates
    for table, field, src in (
        ("patient", "birth_date", pat),
        ("tumour", "diagnosis_date", tum),
        ("event", "event_date", ev),
    ):
        ok = src[field].notna() & (src[field].astype(str).str.len() == 10)
        for i in _pick(rng, np.flatnonzero(ok.to_numpy()), used[table], k_of(table)):
            year = int(str(src[field].iloc[i])[:4])
            plant(table, i, field, _bad_date(style, year, rng), "impossible_date", "date_validity",
                  "type")  # fmt: skip
    # date order: diagnosis before birth; event before diagnosis
    full_birth = tum.birth_date.astype(str).str.len() == 10
    for i in _pick(rng, np.flatnonzero(full_birth.to_numpy()), used["tumour"], k_of("tumour")):
        birth = np.datetime64(str(tum.birth_date.iloc[i]), "D")
        bad = _render_date(style, birth - int(rng.integers(30, 700)))
        plant("tumour", i, "diagnosis_date", bad, "date_order", "date_order",
              "tumour.diagnosis_before_birth")  # fmt: skip
    for i in _pick(rng, np.arange(len(ev)), used["event"], k_of("event")):
        dx = np.datetime64(str(ev.diagnosis_date.iloc[i]), "D")
        bad = _render_date(style, dx - int(rng.integers(10, 200)))
        plant("event", i, "event_date", bad, "date_order", "date_order", "event.before_diagnosis")
    # invalid codes
    morph_col = cols["tumour"]["morphology"]
    for j, i in enumerate(_pick(rng, np.arange(len(tum)), used["tumour"], 2 * k_of("tumour"))):
        if j % 2 == 0:
            cur = str(frames["tumour"].at[i, morph_col])
            plant("tumour", i, "morphology", "9999" + cur[4:], "invalid_code", "code_validity",
                  "code.icdo3_morphology")  # fmt: skip
        else:
            bad = "C99.9" if style["topography"] == "dotted" else "C999"
            plant("tumour", i, "topography", bad, "invalid_code", "code_validity",
                  "code.icdo3_topography")  # fmt: skip
    # sex/site conflicts: ovary in a boy; testicular relapse in a girl
    boys = np.flatnonzero((tum.sex == "male").to_numpy())
    ovary = "C56.9" if style["topography"] == "dotted" else "C569"
    for i in _pick(rng, boys, used["tumour"], k_of("tumour")):
        plant("tumour", i, "topography", ovary, "sex_site_conflict", "sex_site", "tumour.sex_site")
    girls_rel = np.flatnonzero(((ev.sex == "female") & (ev.event_type == "relapse")).to_numpy())
    testis = (_value_map(style, "event", "relapse_site") or {}).get("testis", "testis")
    for i in _pick(rng, girls_rel, used["event"], k_of("event")):
        plant("event", i, "relapse_site", testis, "sex_site_conflict", "sex_site",
              "event.testis_relapse_female")  # fmt: skip
    # exact duplicate rows (the copy, right after the original, is the error)
    for table, key in (("patient", "patient_id"), ("event", "event_id")):
        col = cols[table][key]
        for i in _pick(rng, np.arange(len(frames[table])), used[table], k_of(table)):
            errors.append({
                "table": table, "index": int(i), "field": col, "model_field": f"{table}.{key}",
                "error_type": "duplicate", "value": frames[table].at[i, col],
                "original": frames[table].at[i, col], "expected_edit": "duplicate_key",
                "edit_id": "key.duplicate", "duplicate": True,
            })  # fmt: skip
    return errors


def _with_duplicates(frame: pd.DataFrame, table: str, dup_rows: list[int]) -> pd.DataFrame:
    """Insert an exact copy of each listed row right after it."""
    if not dup_rows:
        return frame
    copies = frame.iloc[dup_rows].copy()
    copies["__dup"] = 1
    out = pd.concat([frame, copies])
    order = np.r_[np.arange(len(frame)), np.asarray(dup_rows) + 0.5]
    return out.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


# -- files -----------------------------------------------------------------------------------------


def _fill_missing(frame: pd.DataFrame, style: dict[str, Any], coded: set[str]) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if col.startswith("__"):
            continue
        token = style["missing_coded"] if col in coded else style["missing"]
        out[col] = out[col].where(out[col].notna(), token)
    return out


def _coded_columns(style: dict[str, Any], table: str) -> set[str]:
    tdef = load_model().table(table)
    cols = style["files"][table]["columns"]
    return {
        cols[f.name]
        for f in tdef.input_fields
        if f.name in cols and (f.allowed is not None or _value_map(style, table, f.name))
    }


def _redcap(frames: dict[str, pd.DataFrame], style: dict[str, Any], per) -> pd.DataFrame:
    """One flat REDCap export: a registration row per record, then repeating-instrument rows."""
    files = style["files"]
    rid = files["patient"]["columns"]["patient_id"]
    reg = (
        frames["patient"]
        .merge(frames["tumour"], on=rid, how="left", suffixes=("", "_t"))
        .drop(columns=["__dup_t"])
    )
    reg["__dup"] = reg["__dup"].fillna(0)
    tum = per["tumour"].to_pandas()[["tumour_id", "patient_id"]]
    rec_of_tumour = dict(zip(tum.tumour_id, tum.patient_id, strict=True))
    parts = [reg.assign(redcap_repeat_instrument="", redcap_repeat_instance="", __order=0)]
    order = {name: i for i, name in enumerate(REDCAP_ORDER)}
    for table in ("event", "treatment", "trial_enrolment", "biomarker", "specimen"):
        f = frames[table].copy()
        instrument = files[table]["file"]
        if rid not in f:
            f.insert(0, rid, f[files[table]["columns"]["tumour_id"]].map(rec_of_tumour))
        # a field belongs to one form: registration fields stay blank on repeating rows
        for col in f.columns:
            if col in reg.columns and col != rid and not col.startswith("__"):
                f[col] = None
        f["redcap_repeat_instrument"] = instrument
        original = 1 - f["__dup"]
        f["redcap_repeat_instance"] = original.groupby(f[rid]).cumsum().astype(str)
        f["__order"] = order[instrument]
        parts.append(f)
    flat = pd.concat(parts, ignore_index=True)
    rank = {r: i for i, r in enumerate(frames["patient"][rid].drop_duplicates())}
    flat["__rec"] = flat[rid].map(rank)
    flat["__pos"] = np.arange(len(flat))
    flat = flat.sort_values(["__rec", "__order", "__pos"], kind="stable").reset_index(drop=True)
    lead = [rid, "redcap_repeat_instrument", "redcap_repeat_instance"]
    rest = [c for c in flat.columns if c not in lead and not c.startswith("__")]
    hidden = [c for c in flat.columns if c.startswith("__")]
    return flat[lead + list(dict.fromkeys(rest)) + hidden]


def _row_numbers(frame: pd.DataFrame, errors: list[dict[str, Any]], tables: set[str]) -> None:
    for e in errors:
        if e["table"] not in tables:
            continue
        col = f"__i_{e['table']}"
        hit = np.flatnonzero(
            (frame[col] == e["index"]).to_numpy()
            & (frame["__dup"] == (1 if e.get("duplicate") else 0)).to_numpy()
        )
        e["row"] = int(hit[0]) + 1


def _visible(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not c.startswith("__")]]


def _write_csv(frame: pd.DataFrame, path: Path, style: dict[str, Any]) -> None:
    text = _visible(frame).to_csv(index=False, sep=style["sep"], lineterminator="\n")
    path.write_bytes(text.encode(style["encoding"], errors="replace"))


_XLSX_PARTS = {
    "ct": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.'
    'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="'
    'application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
    'ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="'
    'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>{sheets}</Types>',
    "ct_sheet": '<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/vnd.'
    'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>',
    "rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http:'
    '//schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http:'
    '//schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/'
    'workbook.xml"/></Relationships>',
    "wb": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="http://'
    'schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.'
    'org/officeDocument/2006/relationships"><sheets>{sheets}</sheets></workbook>',
    "wb_sheet": '<sheet name="{name}" sheetId="{i}" r:id="rId{i}"/>',
    "wb_rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="'
    'http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>',
    "wb_rel": '<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/'
    '2006/relationships/worksheet" Target="worksheets/sheet{i}.xml"/>',
    "sheet": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://'
    'schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>',
}


def _col_letter(j: int) -> str:
    s = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        s = chr(65 + r) + s
    return s


def _xml_text(s: pd.Series) -> pd.Series:
    return (
        s.str.replace("&", "&amp;", regex=False)
        .str.replace("<", "&lt;", regex=False)
        .str.replace(">", "&gt;", regex=False)
    )


def _sheet_xml(frame: pd.DataFrame) -> str:
    """Worksheet XML built column-wise: numbers as values, everything else as inline strings."""
    n = len(frame)
    rownum = pd.Series(np.arange(2, n + 2).astype(str), index=frame.index)
    cells = pd.Series("", index=frame.index, dtype=object)
    header = []
    for j, col in enumerate(frame.columns):
        letter = _col_letter(j)
        header.append(f'<c r="{letter}1" t="inlineStr"><is><t>{col}</t></is></c>')
        v = frame[col]
        numeric = v.map(lambda x: isinstance(x, int | float) and not isinstance(x, bool))
        text = v.astype(str)
        ref = '<c r="' + letter + rownum
        num_xml = ref + '"><v>' + text + "</v></c>"
        str_xml = ref + '" t="inlineStr"><is><t>' + _xml_text(text) + "</t></is></c>"
        cells = cells + num_xml.where(numeric, str_xml).where(v.notna() & (text != ""), "")
    rows = '<row r="' + rownum + '">' + cells + "</row>"
    head = '<row r="1">' + "".join(header) + "</row>"
    return _XLSX_PARTS["sheet"].format(rows=head + "".join(rows.tolist()))


def _write_xlsx(sheets: dict[str, pd.DataFrame], path: Path) -> None:
    """A minimal Office Open XML workbook, one sheet per table, written directly (fast), with
    fixed zip timestamps so that the same seed gives the same bytes."""
    names = list(sheets)
    parts = {
        "[Content_Types].xml": _XLSX_PARTS["ct"].format(
            sheets="".join(_XLSX_PARTS["ct_sheet"].format(i=i + 1) for i in range(len(names)))
        ),
        "_rels/.rels": _XLSX_PARTS["rels"],
        "xl/workbook.xml": _XLSX_PARTS["wb"].format(
            sheets="".join(
                _XLSX_PARTS["wb_sheet"].format(name=n, i=i + 1) for i, n in enumerate(names)
            )
        ),
        "xl/_rels/workbook.xml.rels": _XLSX_PARTS["wb_rels"].format(
            rels="".join(_XLSX_PARTS["wb_rel"].format(i=i + 1) for i in range(len(names)))
        ),
    }
    for i, name in enumerate(names):
        parts[f"xl/worksheets/sheet{i + 1}.xml"] = _sheet_xml(_visible(sheets[name]))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"))


def _redcap_dictionary(style: dict[str, Any], flat_columns: list[str]) -> pd.DataFrame:
    """The REDCap data dictionary of the KE project: forms, field types and coded choices."""
    rows: list[list[Any]] = []
    model = load_model()
    for table, spec in style["files"].items():
        if table == "population":
            continue
        form = "registration" if spec["file"] == "registration" else spec["file"]
        for fname, col in spec["columns"].items():
            if col in [r[0] for r in rows]:
                continue
            f = model.table(table).field(fname)
            vmap = _value_map(style, table, fname)
            choices = " | ".join(f"{v}, {k}" for k, v in vmap.items()) if vmap else ""
            ftype = "radio" if choices else "text"
            validation = {"date": "date_mdy", "partial_date": "", "float": "number",
                          "integer": "integer"}.get(f.type, "")  # fmt: skip
            rows.append([col, form, "", ftype, f.description, choices, "", validation, ""])
    for col, label in (("first_name", "First name"), ("last_name", "Last name"),
                       ("birth_cert_no", "Birth certificate number")):  # fmt: skip
        if col in flat_columns:
            rows.append([col, "registration", "", "text", label, "", "", "", "y"])
    return pd.DataFrame(
        rows,
        columns=[
            "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
            "Choices, Calculations, OR Slider Labels", "Field Note",
            "Text Validation Type OR Show Slider Number", "Identifier?",
        ],
    )  # fmt: skip


def _readme(code: str, style: dict[str, Any], files: dict[str, list[str]]) -> str:
    """An export note such as a registry sends with its files (formats, codes; no error list)."""
    lines = [
        f"{style['registry']} — data export",
        "",
        f"Language of column names and values: {style['language']}.",
    ]
    if style["writer"] == "csv":
        lines.append(
            f"CSV files, delimiter '{style['sep']}', encoding {style['encoding']}, "
            f"decimal mark '{style['decimal']}'."
        )
    elif style["writer"] == "xlsx":
        lines.append(f"One Excel workbook, {style['file']}, one sheet per subject.")
    else:
        lines.append(
            f"REDCap project export ({style['file']}): one row per record with repeating "
            "instruments (redcap_repeat_instrument, redcap_repeat_instance); coded values are "
            "explained in data_dictionary.csv."
        )
    date = "Excel serial day numbers" if style["date"] == "excel_serial" else style["date"]
    lines.append(f"Dates: {date}; a missing value is written '{style['missing']}'"
                 + (f" ('{style['missing_coded']}' in coded fields)."
                    if style["missing_coded"] != style["missing"] else "."))  # fmt: skip
    sex = _value_map(style, "patient", "sex") or {}
    lines.append("Sex: " + ", ".join(f"{v} = {k}" for k, v in sex.items()) + ".")
    morph = {"slash": "morphology with behaviour, e.g. 9836/3", "five": "morphology with "
             "behaviour as five digits, e.g. 98363", "separate": "morphology (4 digits) and "
             "behaviour in separate columns"}[style["morphology"]]  # fmt: skip
    topo = "C42.1" if style["topography"] == "dotted" else "C421"
    lines.append(f"ICD-O-3: {morph}; topography written like {topo}.")
    lines.append("")
    lines.append("Files:")
    describe = {
        "patient": "patients (one row per child)", "tumour": "tumours (one row per primary)",
        "event": "events (remission, relapse, progression, death)", "treatment": "treatments",
        "trial_enrolment": "clinical trial enrolments", "biomarker": "biomarkers",
        "specimen": "biobank specimens", "population": "population at risk by year, sex and age",
    }  # fmt: skip
    for fname, tables in files.items():
        lines.append(f"  {fname}: " + "; ".join(describe[t] for t in tables))
    return "\n".join(lines) + "\n"


def write_messy(
    code: str, per: dict[str, pa.Table], cdir: Path, seed: int, identity: pa.Table | None
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write one country's export in its own style; return the files and the injected errors."""
    style = styles()[code]
    number = sum(ord(ch) * 256**i for i, ch in enumerate(code))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 4, number])))
    frames = {t: render_table(t, per[t], style, identity) for t in style["files"]}
    errors = inject_errors(rng, frames, per, style)
    for table in frames:
        dups = sorted(e["index"] for e in errors if e["table"] == table and e.get("duplicate"))
        frames[table] = _with_duplicates(frames[table], table, dups)
    coded = {t: _coded_columns(style, t) for t in frames}
    cdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    listing: dict[str, list[str]] = {}
    if style["writer"] == "redcap":
        flat = _redcap({t: frames[t] for t in frames if t != "population"}, style, per)
        _row_numbers(flat, errors, set(frames) - {"population"})
        all_coded = set().union(*coded.values())
        path = cdir / style["file"]
        _write_csv(_fill_missing(flat, style, all_coded), path, style)
        written.append(path)
        listing[style["file"]] = [t for t in frames if t != "population"]
        dd = _redcap_dictionary(style, list(flat.columns))
        dd.to_csv(cdir / "data_dictionary.csv", index=False, lineterminator="\n")
        written.append(cdir / "data_dictionary.csv")
        pop = frames["population"]
        _write_csv(_fill_missing(pop, style, coded["population"]), cdir / "population.csv", style)
        written.append(cdir / "population.csv")
        listing["population.csv"] = ["population"]
        file_of = {t: style["file"] for t in frames} | {"population": "population.csv"}
    elif style["writer"] == "xlsx":
        sheets = {}
        for t, frame in frames.items():
            _row_numbers(frame, errors, {t})
            sheets[style["files"][t]["file"]] = _fill_missing(frame, style, coded[t])
        path = cdir / style["file"]
        _write_xlsx(sheets, path)
        written.append(path)
        listing[style["file"]] = list(frames)
        file_of = {t: style["file"] for t in frames}
    else:
        file_of = {}
        for t, frame in frames.items():
            _row_numbers(frame, errors, {t})
            path = cdir / style["files"][t]["file"]
            _write_csv(_fill_missing(frame, style, coded[t]), path, style)
            written.append(path)
            listing[path.name] = [t]
            file_of[t] = path.name
    (cdir / "README.txt").write_text(_readme(code, style, listing), encoding="utf-8")
    written.append(cdir / "README.txt")
    out = []
    for e in sorted(errors, key=lambda e: (file_of[e["table"]], e["table"], e["row"], e["field"])):
        entry = {"country": code, "file": f"{code}/{file_of[e['table']]}"}
        if style["writer"] == "xlsx":
            entry["sheet"] = style["files"][e["table"]]["file"]
        entry |= {k: _plain(e[k]) for k in ("row", "field", "model_field", "error_type", "value",
                                            "original", "expected_edit", "edit_id")}  # fmt: skip
        out.append(entry)
    return written, out


def _plain(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v

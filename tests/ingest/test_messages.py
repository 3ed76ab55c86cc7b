"""What a data manager reads after ingesting a hospital's mapped export: a date that does not
exist said in her own format, conflicting duplicate keys, and a quarantine export whose columns
each hold one kind of value."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from ccdp.ingest.mapping import apply_mapping, load_mapping
from ccdp.ingest.pipeline import ingest_frames
from ccdp.ingest.quarantine import export_quarantine, quarantine_rows
from ccdp.store import NodeStore

TODAY = date(2025, 1, 1)
PACIENTES = (
    "Prontuário;Sexo;Data de nascimento;Situação;Data do último contato\r\n"
    "100201;Masculino;03/05/2010;Vivo;15/06/2024\r\n"
    "100204;Feminino;28/02/2011;Óbito;13/01/2024\r\n"
    "100207;Feminino;31/12/2012;Vivo;01/02/2024\r\n"
    "100210;Masculino;05/11/2013;Vivo;20/03/2024\r\n"
)
TUMORES = (
    "Número do tumor;Prontuário;Data do diagnóstico;Topografia;Morfologia\r\n"
    "T1;100201;12/01/2012;C42.1;9836/3\r\n"
    "T2;100204;31/02/2012;C71.9;9440/3\r\n"  # 31 February does not exist
    "T3;100207;05/03/2013;C42.1;9836/3\r\n"
    "T3;100207;05/03/2013;C42.1;9837/3\r\n"  # same key, another morphology
    "T4;100210;23/04/2014;C64.9;8960/3\r\n"
    "T4;100210;23/04/2014;C64.9;8960/3\r\n"  # the same row twice
)
MAPPING = """\
version: 1
sources:
  pacientes: {file: pacientes.csv, encoding: cp1252, delimiter: ";", date_formats: ["%d/%m/%Y"]}
  tumores: {file: tumores.csv, encoding: cp1252, delimiter: ";", date_formats: ["%d/%m/%Y"]}
tables:
  patient:
    source: pacientes
    fields:
      patient_id: Prontuário
      sex: {column: Sexo, values: {Masculino: male, Feminino: female}}
      birth_date: Data de nascimento
      country: {constant: BR}
      vital_status: {column: Situação, values: {Vivo: alive, Óbito: dead}}
      last_contact_date: Data do último contato
  tumour:
    source: tumores
    fields:
      tumour_id: Número do tumor
      patient_id: Prontuário
      diagnosis_date: Data do diagnóstico
      topography: Topografia
      morphology: Morfologia
"""


def _ingest(tmp_path: Path) -> Path:
    site = tmp_path / "hospital"
    site.mkdir()
    (site / "pacientes.csv").write_bytes(PACIENTES.encode("cp1252"))
    (site / "tumores.csv").write_bytes(TUMORES.encode("cp1252"))
    (tmp_path / "hospital.yaml").write_text(MAPPING, encoding="utf-8")
    frames = apply_mapping(load_mapping(tmp_path / "hospital.yaml"), site)
    store = tmp_path / "node.duckdb"
    ingest_frames(store, frames, str(site), progress=False, today=TODAY)
    return store


def test_a_date_that_does_not_exist_is_said_in_the_sources_format(tmp_path: Path) -> None:
    store = _ingest(tmp_path)
    (entry,) = [r for r in quarantine_rows(store, "tumour") if r["source_row"] == 2]
    assert entry["messages"] == [
        "tumores.csv row 2: diagnosis_date '31/02/2012' is not a date: 31 February 2012 does "
        "not exist (declared date format %d/%m/%Y) [type]"
    ]


def test_duplicate_keys_with_conflicting_values_quarantine_every_row(tmp_path: Path) -> None:
    """T3 twice, 9836/3 vs 9837/3: neither is kept, both say why. T4 twice, identical: the
    first is kept, the second quarantined as a duplicate of it."""
    store = _ingest(tmp_path)
    entries = {r["source_row"]: r for r in quarantine_rows(store, "tumour")}
    conflict = (
        "tumour_id 'T3' duplicate key with conflicting values (morphology 9836/3 vs 9837/3); "
        "every row with this key is quarantined"
    )
    assert entries[3]["messages"] == [f"tumores.csv row 3: {conflict} [key.conflict]"]
    assert entries[4]["messages"] == [f"tumores.csv row 4: {conflict} [key.duplicate]"]
    assert entries[6]["messages"] == [
        "tumores.csv row 6: tumour_id 'T4' duplicates the key of tumores.csv row 5 [key.duplicate]"
    ]
    assert set(entries) == {2, 3, 4, 6}
    with NodeStore(store, read_only=True) as s:
        assert sorted(s.read("tumour")["tumour_id"]) == ["T1", "T4"]


def test_quarantine_export_keeps_one_kind_of_value_per_column(tmp_path: Path) -> None:
    """The date column is as the site wrote it in every row; the ISO reading is beside it."""
    store = _ingest(tmp_path)
    out = export_quarantine(store, tmp_path / "fix")
    with out["tumour"].open(encoding="utf-8", newline="") as fh:
        rows = {r["_source_row"]: r for r in csv.DictReader(fh)}
    assert {k: v["diagnosis_date"] for k, v in rows.items()} == {
        "2": "31/02/2012",
        "3": "05/03/2013",
        "4": "05/03/2013",
        "6": "23/04/2014",
    }
    assert {k: v["_parsed__diagnosis_date"] for k, v in rows.items()} == {
        "2": "",
        "3": "2013-03-05",
        "4": "2013-03-05",
        "6": "2014-04-23",
    }
    readme = (tmp_path / "fix" / "README.txt").read_text(encoding="utf-8")
    assert "_parsed__<field>" in readme and "as the site sent it" in readme

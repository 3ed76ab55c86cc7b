"""Mapping specs: load with clear errors, apply to a messy site export, get canonical text."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import openpyxl
import pytest

from ccdp.errors import CcdpError
from ccdp.ingest.mapping import MappingError, MappingSpec, apply_mapping, load_mapping
from ccdp.ingest.readers import ReaderError
from ccdp.model import load_model

PATIENTS = (
    "num_patient;sexe;date_naissance;pays;statut;date_der_nouv;date_deces;nir;prénom\n"
    "P1;1;03/05/2010;FR;vivant;01/02/2020;;123;Léa\n"
    "P2;2;NA;FR;décédé;15/06/2019;15/06/2019;456;Zoé\n"
    "P3;H;31/02/2011;FR;-;40123;;789;Éric\n"
    "P4;X;05/2012;FR;vivant;01/02/2020;;321;Noé\n"
)
TUMOURS = (
    "id_tumeur,nir,date_diag,topo,morpho,leuco,rechute1_date,rechute1_site,rechute2_date,"
    "rechute2_site\n"
    'T1,123,2012-01-05,C421,9836/3,"12,5",2013-04-01,MO,2014-06-01,SNC\n'
    "T2,456,2013-02-07,c22.0,89703,99,,,,\n"
    "T3,999,2014-03-09,X99,abc,3,2015-01-01,MO,,\n"
)
MAPPING = """
version: 1
description: test site
missing: [NA, "-"]
sources:
  patients:
    file: patients.csv
    date_formats: ["%d/%m/%Y", "%m/%Y", excel_serial]
  tumours:
    file: tumeurs.csv
    decimal: ","
value_maps:
  sexe: {"1": male, "2": female, H: male}
  site: {MO: bone_marrow, SNC: cns}
tables:
  patient:
    source: patients
    fields:
      patient_id: num_patient
      sex: {column: sexe, values: sexe}
      birth_date: date_naissance
      country: {constant: FR}
      vital_status: {column: statut, values: {vivant: alive, décédé: dead}, default: unknown}
      last_contact_date: date_der_nouv
      death_date: date_deces
    identifiers:
      national_id: nir
      given_name: prénom
  tumour:
    source: tumours
    join:
      - source: patients
        on: {nir: nir}
        columns: [num_patient]
    fields:
      tumour_id: id_tumeur
      patient_id: num_patient
      diagnosis_date: date_diag
      topography: topo
      morphology: morpho
      wbc_at_diagnosis: {column: leuco, missing: ["99"]}
  event:
    source: tumours
    unpivot:
      columns:
        date: [rechute1_date, rechute2_date]
        site: [rechute1_site, rechute2_site]
    fields:
      event_id: {template: "{id_tumeur}-R{_item}"}
      tumour_id: id_tumeur
      event_type: {constant: relapse}
      event_date: date
      relapse_site: {column: site, values: site}
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "patients.csv").write_bytes(PATIENTS.encode("latin-1"))
    (folder / "tumeurs.csv").write_text(TUMOURS, encoding="utf-8")
    (folder / "map.yaml").write_text(MAPPING, encoding="utf-8")
    return folder


def rows(frame, *cols):
    return [tuple(r) for r in frame[list(cols)].itertuples(index=False)]


def test_patient_table_is_canonical_text(site: Path) -> None:
    out = apply_mapping(load_mapping(site / "map.yaml"), site)
    patient = out["patient"]
    inputs = [f.name for f in load_model().table("patient").input_fields]
    assert list(patient.columns[: len(inputs)]) == inputs
    assert rows(
        patient,
        "patient_id",
        "sex",
        "birth_date",
        "vital_status",
        "last_contact_date",
        "death_date",
    ) == [
        ("P1", "male", "2010-05-03", "alive", "2020-02-01", None),
        ("P2", "female", None, "dead", "2019-06-15", "2019-06-15"),
        # Impossible date and unmapped code pass through raw for the quality edits.
        ("P3", "male", "31/02/2011", "unknown", "2009-11-06", None),
        ("P4", "X", "2012-05", "alive", "2020-02-01", None),
    ]
    assert patient["country"].tolist() == ["FR"] * 4
    assert patient["cause_of_death"].tolist() == [None] * 4
    assert patient["_source_file"].tolist() == ["patients.csv"] * 4
    assert patient["_source_row"].tolist() == [1, 2, 3, 4]
    assert patient["_identifier_given_name"].tolist() == ["Léa", "Zoé", "Éric", "Noé"]
    assert patient["_identifier_national_id"].tolist() == ["123", "456", "789", "321"]
    assert "_identifier_family_name" not in patient.columns


def test_tumour_join_codes_and_numbers(site: Path) -> None:
    tumour = apply_mapping(load_mapping(site / "map.yaml"), site)["tumour"]
    assert rows(
        tumour,
        "tumour_id",
        "patient_id",
        "topography",
        "morphology",
        "behaviour",
        "wbc_at_diagnosis",
    ) == [
        ("T1", "P1", "C42.1", "9836", "3", "12.5"),
        ("T2", "P2", "C22.0", "8970", "3", None),
        # No patient with national id 999: the key is missing, the row will be quarantined.
        ("T3", None, "X99", "abc", None, "3"),
    ]


def test_unpivot_makes_one_event_per_filled_item(site: Path) -> None:
    event = apply_mapping(load_mapping(site / "map.yaml"), site)["event"]
    assert rows(
        event, "event_id", "tumour_id", "event_type", "event_date", "relapse_site", "_source_row"
    ) == [
        ("T1-R1", "T1", "relapse", "2013-04-01", "bone_marrow", 1),
        ("T1-R2", "T1", "relapse", "2014-06-01", "cns", 1),
        ("T3-R1", "T3", "relapse", "2015-01-01", "bone_marrow", 3),
    ]


def test_where_filter_and_multiple_parts(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(
        "record_id,redcap_repeat_instrument,redcap_repeat_instance,tumour,rel_date,death\n"
        "1,,,T1,,2019-01-02\n"
        "1,relapse,1,,2016-05-01,\n"
        "1,relapse,2,,2017-07-09,\n"
        "2,,,T2,,\n",
        encoding="utf-8",
    )
    spec = MappingSpec.model_validate(
        {
            "sources": {
                "relapses": {
                    "file": "export.csv",
                    "where": [{"column": "redcap_repeat_instrument", "equals": "relapse"}],
                },
                "base": {
                    "file": "export.csv",
                    "where": [{"column": "redcap_repeat_instrument", "missing": True}],
                },
            },
            "tables": {
                "event": [
                    {
                        "source": "relapses",
                        "fields": {
                            "event_id": {"template": "{tumour}-{redcap_repeat_instance}"},
                            "tumour_id": "tumour",
                            "event_type": {"constant": "relapse"},
                            "event_date": "rel_date",
                        },
                    },
                    {
                        "source": "base",
                        "where": [{"column": "death", "missing": False}],
                        "fields": {
                            "event_id": {"template": "{tumour}-death"},
                            "tumour_id": "tumour",
                            "event_type": {"constant": "death"},
                            "event_date": "death",
                        },
                    },
                ]
            },
        }
    )
    event = apply_mapping(spec, tmp_path)["event"]
    assert rows(event, "event_id", "event_type", "event_date", "_source_row") == [
        ("T1-1", "relapse", "2016-05-01", 2),
        ("T1-2", "relapse", "2017-07-09", 3),
        ("T1-death", "death", "2019-01-02", 1),
    ]


def test_xlsx_source_and_extract(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Patienten"
    sheet.append(["PatNr", "Geschlecht", "Geburtsdatum", "Status", "Letzter Kontakt"])
    sheet.append(["ID-0001", "w", dt.datetime(2010, 5, 3), "lebend", 43831])
    book.save(tmp_path / "register.xlsx")
    spec = MappingSpec.model_validate(
        {
            "sources": {
                "p": {
                    "file": "*.xlsx",
                    "sheet": "Patienten",
                    "date_formats": ["iso", "excel_serial"],
                }
            },
            "tables": {
                "patient": {
                    "source": "p",
                    "fields": {
                        "patient_id": {"column": "PatNr", "extract": r"ID-0*(\d+)"},
                        "sex": {"column": "Geschlecht", "values": {"w": "female", "m": "male"}},
                        "birth_date": "Geburtsdatum",
                        "country": {"constant": "de"},
                        "vital_status": {"column": "Status", "values": {"lebend": "alive"}},
                        "last_contact_date": "Letzter Kontakt",
                    },
                }
            },
        }
    )
    patient = apply_mapping(spec, tmp_path)["patient"]
    assert rows(patient, "patient_id", "sex", "birth_date", "country", "last_contact_date") == [
        ("1", "female", "2010-05-03", "DE", "2020-01-01")
    ]


def test_unmapped_error_policy_names_value_file_and_row(site: Path) -> None:
    text = (
        (site / "map.yaml")
        .read_text()
        .replace(
            "sex: {column: sexe, values: sexe}",
            "sex: {column: sexe, values: sexe, unmapped: error}",
        )
    )
    (site / "map.yaml").write_text(text)
    with pytest.raises(MappingError) as err:
        apply_mapping(load_mapping(site / "map.yaml"), site)
    assert "field sex" in str(err.value) and "'X' (patients.csv row 4)" in str(err.value)


def test_json_mapping(site: Path) -> None:
    import yaml

    from ccdp.ingest.specbase import StringLoader

    data = yaml.load(MAPPING, Loader=StringLoader)
    (site / "map.json").write_text(json.dumps(data, indent=2))
    out = apply_mapping(load_mapping(site / "map.json"), site)
    assert out["patient"]["sex"].tolist() == ["male", "female", "male", "X"]


# ------------------------------------------------------------------ bad mappings, bad inputs


def bad(site: Path, old: str, new: str) -> str:
    (site / "bad.yaml").write_text(MAPPING.replace(old, new), encoding="utf-8")
    with pytest.raises(CcdpError) as err:
        apply_mapping(load_mapping(site / "bad.yaml"), site)
    return str(err.value)


def test_yaml_typo_in_a_key(site: Path) -> None:
    msg = bad(site, "sex: {column: sexe", "sex: {colum: sexe")
    assert msg.startswith(f"mapping file {site / 'bad.yaml'}, line 20:")
    assert "tables.patient.fields.sex.colum" in msg and "did you mean 'column'" in msg


def test_yaml_syntax_error(site: Path) -> None:
    msg = bad(site, "      sex: {column", "      sex {column")
    assert "line 20" in msg and "YAML syntax error" in msg


def test_unknown_field_and_missing_required_field(site: Path) -> None:
    msg = bad(site, "topography: topo", "topografy: topo")
    assert "table tumour has no field 'topografy' (did you mean 'topography'?)" in msg
    assert "required field 'topography' is not mapped" in msg


def test_derived_field_and_unknown_table(site: Path) -> None:
    assert "derived at ingest" in bad(
        site,
        "      tumour_id: id_tumeur\n      patient_id",
        "      tumour_id: id_tumeur\n      iccc_group: x\n      patient_id",
    )
    assert "unknown table 'tumor' (did you mean 'tumour'?)" in bad(
        site, "  tumour:\n", "  tumor:\n"
    )


def test_column_not_in_source_lists_close_matches(site: Path) -> None:
    msg = bad(site, "morphology: morpho", "morphology: morfo")
    assert "bad.yaml" in msg and "table tumour" in msg and "field morphology" in msg
    assert "column 'morfo' is not in source 'tumours'" in msg and "'morpho'" in msg


def test_unknown_source_and_value_map(site: Path) -> None:
    assert "unknown source 'tumour' (did you mean 'tumours'?)" in bad(
        site, "    source: tumours\n    join", "    source: tumour\n    join"
    )
    assert "no value map named 'sex'" in bad(site, "values: sexe}", "values: sex}")


def test_duplicate_key_and_bad_date_format(site: Path) -> None:
    assert "key 'topography' repeated" in bad(
        site, "topography: topo\n", "topography: topo\n      topography: topo\n"
    )
    assert "date format 'DD/MM/YYYY'" in bad(site, '"%m/%Y", excel_serial', '"DD/MM/YYYY"')


def test_one_shape_in_both_day_month_orders_is_refused(site: Path) -> None:
    """%d/%m/%Y then %m/%d/%Y: 01/13/2017 would be read month first but 03/04/2017 always day
    first, silently; the spec is refused where the list is, at each level."""
    msg = bad(site, '"%d/%m/%Y", "%m/%Y"', '"%d/%m/%Y", "%m/%Y", "%m/%d/%Y"')
    assert f"mapping file {site / 'bad.yaml'}, line 8: sources.patients.date_formats: " in msg
    assert "'%d/%m/%Y' (day first) and '%m/%d/%Y' (month first)" in msg
    assert "always wins, silently" in msg
    msg = bad(
        site,
        "birth_date: date_naissance",
        'birth_date: {column: date_naissance, date_formats: ["%m/%d/%y", "%d/%m/%y"]}',
    )
    assert "tables.patient.fields.birth_date.date_formats: lists '%m/%d/%y' (month first)" in msg
    msg = bad(site, "missing: [NA", 'date_formats: ["%d-%m-%Y", "%m-%d-%Y"]\nmissing: [NA')
    assert ", line 4: date_formats: lists '%d-%m-%Y' (day first)" in msg
    # two shapes, one order each, are a choice the site can make (4-digit day first, 2-digit US)
    text = MAPPING.replace('"%d/%m/%Y", "%m/%Y"', '"%d/%m/%Y", "%m/%d/%y", "%m/%Y"')
    (site / "ok.yaml").write_text(text, encoding="utf-8")
    assert load_mapping(site / "ok.yaml").sources["patients"].date_formats == [
        "%d/%m/%Y",
        "%m/%d/%y",
        "%m/%Y",
        "excel_serial",
    ]


def test_a_date_the_other_order_reads_differently_is_flagged_at_ingest(site: Path) -> None:
    """03/05/2010 is the only birth date %d/%m/%Y reads and nothing shows that order (no day
    over 12): stored as 3 May, flagged with both readings; last contact has 15/06/2019, so its
    01/02/2020 stands unflagged. 03/04/17, read by a %m/%d/%y fallback, is flagged too."""
    from ccdp.ingest.pipeline import ingest_frames
    from ccdp.store import NodeStore

    text = MAPPING.replace('"%d/%m/%Y", "%m/%Y"', '"%d/%m/%Y", "%m/%d/%y", "%m/%Y"')
    (site / "fallback.yaml").write_text(text, encoding="utf-8")
    (site / "patients.csv").write_bytes(
        PATIENTS.replace("P4;X;05/2012", "P4;1;03/04/12").encode("latin-1")
    )
    frames = apply_mapping(load_mapping(site / "fallback.yaml"), site)
    store = site / "node.duckdb"
    report = ingest_frames(store, frames, str(site), progress=False, today=dt.date(2024, 1, 15))
    with NodeStore(store, read_only=True) as s:
        flagged = s.con.execute(
            "SELECT source_row, field, value, message FROM quality_flag "
            "WHERE edit_id = 'date.ambiguous_order' ORDER BY source_row"
        ).fetchall()
        birth = s.con.execute("SELECT _source_row, birth_date FROM patient ORDER BY 1").fetchall()
    assert [r[:3] for r in flagged] == [
        (1, "birth_date", "03/05/2010"),
        (4, "birth_date", "03/04/12"),
    ]
    assert flagged[0][3] == (
        "patients.csv row 1: birth_date '03/05/2010' is read as 2010-05-03, but in the other "
        "day/month order it is 2010-03-05; no other value of the field shows which order the "
        "site writes: check it [date.ambiguous_order]"
    )
    assert (
        "is read as 2012-03-04, but in the other day/month order it is 2012-04-03"
        in (flagged[1][3])
    )
    assert dict(birth)[1] == dt.date(2010, 5, 3) and dict(birth)[4] == dt.date(2012, 3, 4)
    assert report.edits["date.ambiguous_order"] == 2


def test_file_glob_without_match(site: Path) -> None:
    msg = bad(site, "file: tumeurs.csv", "file: tumours.csv")
    assert "no file matches 'tumours.csv'" in msg and "tumeurs.csv" in msg


def test_truncated_source_and_wrong_encoding_stop_with_reader_error(site: Path) -> None:
    (site / "tumeurs.csv").write_text(TUMOURS[:-12], encoding="utf-8")
    with pytest.raises(ReaderError, match=r"tumeurs.csv, line 4.*truncated"):
        apply_mapping(load_mapping(site / "map.yaml"), site)
    text = MAPPING.replace("file: patients.csv", "file: patients.csv\n    encoding: utf-8")
    (site / "enc.yaml").write_text(text)
    (site / "tumeurs.csv").write_text(TUMOURS, encoding="utf-8")
    with pytest.raises(ReaderError, match=r"patients.csv: not valid utf-8"):
        apply_mapping(load_mapping(site / "enc.yaml"), site)


def test_missing_sheet_through_mapping(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Pazienti"
    book.save(tmp_path / "reg.xlsx")
    spec = MappingSpec.model_validate(
        {
            "sources": {"p": {"file": "reg.xlsx", "sheet": "Tumori"}},
            "tables": {
                "trial_enrolment": {"source": "p", "fields": {"patient_id": "a", "trial": "b"}}
            },
        }
    )
    with pytest.raises(ReaderError, match=r"no sheet 'Tumori'.*'Pazienti'"):
        apply_mapping(spec, tmp_path)


def test_fhir_bundle_through_a_mapping(tmp_path: Path) -> None:
    from tests.ingest.test_readers import ICDO3, fhir_bundle

    (tmp_path / "bundle.json").write_text(json.dumps(fhir_bundle()), encoding="utf-8")
    spec = MappingSpec.model_validate(
        {
            "sources": {
                "patients": {"file": "*.json", "resource": "Patient"},
                "conditions": {"file": "*.json", "resource": "Condition"},
            },
            "tables": {
                "patient": {
                    "source": "patients",
                    "fields": {
                        "patient_id": "id",
                        "sex": "gender",
                        "birth_date": "birthDate",
                        "country": {"constant": "FR"},
                        "vital_status": {
                            "column": "deceasedBoolean",
                            "values": {"false": "alive", "true": "dead"},
                        },
                        "last_contact_date": {"constant": "2020-12-31"},
                    },
                    "identifiers": {
                        "family_name": "name[0].family",
                        "national_id": "identifier[system=urn:oid:1.2.250.1.213.1.4.8].value",
                    },
                },
                "tumour": {
                    "source": "conditions",
                    "fields": {
                        "tumour_id": "id",
                        "patient_id": {"column": "subject.reference", "extract": "([^/:]+)$"},
                        "diagnosis_date": "onsetDateTime",
                        "topography": f"bodySite[0].coding[system={ICDO3}].code",
                        "morphology": f"code.coding[system={ICDO3}].code",
                    },
                },
            },
        }
    )
    out = apply_mapping(spec, tmp_path)
    assert rows(out["patient"], "patient_id", "sex", "vital_status", "_identifier_family_name") == [
        ("p1", "female", "alive", "Durand")
    ]
    assert rows(
        out["tumour"], "patient_id", "topography", "morphology", "behaviour", "_source_row"
    ) == [("p1", "C42.1", "9836", "3", 2)]


def test_ingest_cli_with_bad_mapping_leaves_store_unchanged(site: Path, ccdp) -> None:
    store = site.parent / "node.duckdb"
    ok = ccdp("ingest", site, "--mapping", site / "map.yaml", "--store", store, "--json")
    assert '"rows_read"' in ok.stdout
    before = store.read_bytes()
    (site / "bad.yaml").write_text(MAPPING.replace("morphology: morpho", "morphology: morfo"))
    bad = ccdp("ingest", site, "--mapping", site / "bad.yaml", "--store", store, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "column 'morfo' is not in source 'tumours'" in bad.stderr and "'morpho'" in bad.stderr
    (site / "tumeurs.csv").write_text(TUMOURS[:-12], encoding="utf-8")
    cut = ccdp("ingest", site, "--mapping", site / "map.yaml", "--store", store, check=False)
    assert cut.returncode == 2 and "truncated" in cut.stderr
    assert store.read_bytes() == before


def test_mapping_may_not_read_outside_the_export_folder(site: Path, ccdp) -> None:
    outside = site.parent / "elsewhere.csv"
    outside.write_bytes(PATIENTS.encode("latin-1"))
    store = site.parent / "node.duckdb"
    for target, expected in [
        ("../elsewhere.csv", "'../elsewhere.csv' names"),
        (str(outside), "is an absolute path"),
    ]:
        (site / "out.yaml").write_text(
            MAPPING.replace("file: patients.csv", f"file: {target!r}"), encoding="utf-8"
        )
        proc = ccdp("ingest", site, "--mapping", site / "out.yaml", "--store", store, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "sources.patients.file" in proc.stderr and expected in proc.stderr
        assert not store.exists()
    (site / "link.csv").symlink_to(outside)
    spec = load_mapping_text(MAPPING.replace("file: patients.csv", "file: link.csv"), site)
    with pytest.raises(MappingError, match="outside the export folder"):
        apply_mapping(spec, site)


def load_mapping_text(text: str, site: Path):
    (site / "spec.yaml").write_text(text, encoding="utf-8")
    return load_mapping(site / "spec.yaml")


def test_mapped_ids_are_pseudonymised_consistently_and_quarantine_keeps_the_source_key(
    site: Path,
) -> None:
    """The tumour file's ids (and event ids made from them) are site values: with identifiers
    in the mapping they are pseudonymised; quarantine names the row by the site's own id."""
    from ccdp.ingest.pipeline import ingest_frames
    from ccdp.ingest.pseudonym import pseudonym
    from ccdp.ingest.quarantine import quarantine_rows
    from ccdp.store import NodeStore
    from ccdp.store.config import pseudonym_key

    store = site.parent / "node.duckdb"
    frames = apply_mapping(load_mapping(site / "map.yaml"), site)
    report = ingest_frames(store, frames, str(site), progress=False, today=dt.date(2024, 1, 1))
    assert report.pseudonymised
    key = pseudonym_key(store, create=False)
    with NodeStore(store, read_only=True) as s:
        tumour_ids = set(s.read("tumour")["tumour_id"])
        event_ids = set(s.read("event")["event_id"])
        event_tumours = set(s.read("event")["tumour_id"])
    assert tumour_ids == {pseudonym(key, "T1")}  # T2 and T3 are quarantined
    assert event_ids == {pseudonym(key, "T1-R1"), pseudonym(key, "T1-R2")}
    assert event_tumours == tumour_ids
    entries = {r["source_key"]: r for r in quarantine_rows(store, "tumour")}
    assert set(entries) == {"T2", "T3"}
    assert entries["T3"]["key"] == pseudonym(key, "T3") == entries["T3"]["raw"]["tumour_id"]
    assert entries["T3"]["source_file"] == "tumeurs.csv" and entries["T3"]["source_row"] == 3
    (event,) = quarantine_rows(store, "event")
    assert event["source_key"] == "T3-R1" and event["key"] == pseudonym(key, "T3-R1")


def test_an_optional_field_whose_column_is_absent_is_null_and_reported(site: Path, ccdp) -> None:
    """A registry that does not record immunophenotype or laterality: the mapping still names
    the columns (one spec for several exports); the fields are null and the report says so."""
    from ccdp.ingest.pipeline import ingest_frames
    from ccdp.store import NodeStore

    text = MAPPING.replace(
        "      wbc_at_diagnosis:",
        "      immunophenotype: {column: immuno, values: {B: b_precursor}}\n"
        "      laterality: cote\n"
        "      wbc_at_diagnosis:",
    )
    (site / "opt.yaml").write_text(text, encoding="utf-8")
    frames = apply_mapping(load_mapping(site / "opt.yaml"), site)
    assert frames.absent_columns == {"tumour": ["laterality", "immunophenotype"]}
    assert frames["tumour"]["immunophenotype"].isna().all()
    store = site.parent / "node.duckdb"
    report = ingest_frames(store, frames, str(site), progress=False, today=dt.date(2024, 1, 1))
    assert report.absent_columns == {"tumour": ["laterality", "immunophenotype"]}
    assert report.accepted > 0
    with NodeStore(store, read_only=True) as s:
        stored = s.read("tumour")
    assert len(stored) and stored["immunophenotype"].isna().all()
    out = ccdp("ingest", site, "--mapping", site / "opt.yaml", "--store", store, "--json")
    assert json.loads(out.stdout)["absent_columns"] == {"tumour": ["laterality", "immunophenotype"]}


def test_a_required_field_whose_column_is_absent_names_file_column_and_key(
    site: Path,
) -> None:
    msg = bad(site, "morphology: morpho", "morphology: morfo")
    assert "tumeurs.csv" in msg and "column 'morfo' is not in source 'tumours'" in msg
    assert "(key tables.tumour.fields.morphology)" in msg and "a required field" in msg
    assert "(did you mean 'morpho'?)" in msg

"""Readers: every format read as text with row numbers; broken files stop with a clear message."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import openpyxl
import pytest

from ccdp.ingest.readers import ReaderError, ReaderOptions, detect_format, read_table
from ccdp.ingest.readers.fhir import read_fhir_resources

LATIN1_CSV = (
    "num_patient;sexe;date_naissance;prénom\n"
    "P1;1;03/05/2010;Léa\n"
    "P2;2;NA;Zoé\n"
    "P3;H;31/12/2011;Éric\n"
)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def test_latin1_semicolon_csv_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", LATIN1_CSV.encode("latin-1"))
    frame = read_table(path)
    assert list(frame.columns) == ["num_patient", "sexe", "date_naissance", "prénom", "_source_row"]
    assert frame["prénom"].tolist() == ["Léa", "Zoé", "Éric"]
    assert frame["_source_row"].tolist() == [1, 2, 3]
    assert frame["sexe"].tolist() == ["1", "2", "H"]


def test_empty_cells_are_none_and_values_are_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "a,b,c\n007,,3.50\n")
    frame = read_table(path)
    assert frame.loc[0, "a"] == "007"
    assert frame.loc[0, "b"] is None
    assert frame.loc[0, "c"] == "3.50"


def test_tab_and_pipe_delimiters_sniffed(tmp_path: Path) -> None:
    for delim in ("\t", "|"):
        path = write(tmp_path, "t.txt", f"x{delim}y\n1{delim}a, b\n2{delim}c\n")
        assert read_table(path)["y"].tolist() == ["a, b", "c"]


def test_declared_wrong_encoding_names_file_line_and_guess(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", LATIN1_CSV.encode("latin-1"))
    with pytest.raises(ReaderError) as err:
        read_table(path, ReaderOptions(encoding="utf-8"))
    msg = str(err.value)
    assert str(path) in msg and "not valid utf-8" in msg and "line 1" in msg
    assert "encoding" in msg


def test_unknown_encoding_name(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "a\n1\n")
    with pytest.raises(ReaderError, match="unknown encoding 'klingon'"):
        read_table(path, ReaderOptions(encoding="klingon"))


def test_truncated_inside_quoted_field(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", 'id,note\n1,"fine"\n2,"cut off here')
    with pytest.raises(ReaderError) as err:
        read_table(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value)
    assert "truncated" in str(err.value)


def test_truncated_last_row_is_short(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "id,sex,birth\n1,m,2010-01-01\n2,f")
    with pytest.raises(ReaderError) as err:
        read_table(path)
    msg = str(err.value)
    assert "line 3" in msg and "2 fields where the header has 3" in msg and "truncated" in msg


def test_ragged_row_in_the_middle_names_its_line(tmp_path: Path) -> None:
    body = 'id,note,x\n1,"two\nlines",a\n2,b,c,d\n3,c,d\n'
    path = write(tmp_path, "p.csv", body)
    with pytest.raises(ReaderError) as err:
        read_table(path)
    # The quoted newline makes row 2 start on physical line 4.
    assert "line 4" in str(err.value) and "data row 2" in str(err.value)


def test_trailing_delimiters_are_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "a;b;\n1;2;\n3;4;\n")
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b", "_source_row"]


def test_empty_file_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="empty"):
        read_table(write(tmp_path, "e.csv", ""))
    with pytest.raises(ReaderError, match="zip archive"):
        read_table(write(tmp_path, "x.csv", b"PK\x03\x04rest-of-zip"))


def test_duplicate_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="'a' appears more than once"):
        read_table(write(tmp_path, "d.csv", "a,b,a\n1,2,3\n"))


def test_a_cell_too_large_names_file_line_row_field_and_limit(tmp_path: Path) -> None:
    """Past Arrow's block and the csv module's 128 KiB default, a 1 MiB cell still reads;
    a 20 MiB one (an unclosed quote swallowing the file?) is refused, pointing at it."""
    from ccdp.ingest.readers.delimited import MAX_FIELD_CHARS

    note = "n" * 2**20
    path = write(tmp_path, "a.csv", f'id,sex,notes\nP1,male,a\nP2,female,"{note}"\n')
    assert read_table(path)["notes"].str.len().tolist() == [1, 2**20]
    big = "x" * (MAX_FIELD_CHARS + 10)
    path = write(tmp_path, "b.csv", f'id,sex,notes\nP1,male,"a\nb"\nP2,female,"{big}"\nP3,m,c\n')
    with pytest.raises(ReaderError) as err:
        read_table(path)
    assert str(err.value).startswith(
        f"{path}, line 4 (data row 2), field 'notes': {MAX_FIELD_CHARS + 10:,} characters, "
        f"more than the limit of {MAX_FIELD_CHARS:,} characters"
    )


def test_header_row_option(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "Export of 2024-01-01\nid,v\n1,x\n")
    frame = read_table(path, ReaderOptions(header_row=2))
    assert frame["v"].tolist() == ["x"] and frame["_source_row"].tolist() == [1]


def make_workbook(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Patienten"
    sheet.append(["Patienten-ID", "Geschlecht", "Geburtsdatum", "Leukozyten", "Serial"])
    sheet.append(["D1", "w", dt.datetime(2010, 5, 3), 12, 40123])
    sheet.append([None, None, None, None, None])
    sheet.append(["D2", "m", dt.date(2011, 1, 2), 3.25, None])
    tumours = book.create_sheet("Tumoren")
    tumours.append(["Tumor-ID", "Patienten-ID"])
    tumours.append(["T1", "D1"])
    book.save(path)


def test_xlsx_cells_become_the_text_a_person_sees(tmp_path: Path) -> None:
    path = tmp_path / "reg.xlsx"
    make_workbook(path)
    frame = read_table(path, ReaderOptions(sheet="Patienten"))
    assert frame["Patienten-ID"].tolist() == ["D1", "D2"]
    assert frame["Geburtsdatum"].tolist() == ["2010-05-03", "2011-01-02"]
    assert frame["Leukozyten"].tolist() == ["12", "3.25"]
    assert frame["Serial"].tolist() == ["40123", None]
    # The blank row is dropped but row numbers still point at the sheet's data rows.
    assert frame["_source_row"].tolist() == [1, 3]
    first = read_table(path)  # no sheet: the first one
    assert first["Patienten-ID"].tolist() == ["D1", "D2"]


def test_missing_sheet_names_the_sheets_present(tmp_path: Path) -> None:
    path = tmp_path / "reg.xlsx"
    make_workbook(path)
    with pytest.raises(ReaderError) as err:
        read_table(path, ReaderOptions(sheet="Behandlung"))
    msg = str(err.value)
    assert "no sheet 'Behandlung'" in msg and "'Patienten', 'Tumoren'" in msg


def test_corrupt_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "reg.xlsx"
    make_workbook(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ReaderError, match=r"not a readable .xlsx workbook"):
        read_table(path)


REDCAP = (
    "record_id,redcap_repeat_instrument,redcap_repeat_instance,sex,diag_date,relapse_date,"
    "relapse_site,baseline_complete\n"
    "1,,,1,2015-02-03,,,2\n"
    "1,relapse,1,,,2016-05-01,bm,2\n"
    "1,relapse,2,,,2017-07-09,cns,2\n"
    "2,,,2,2016-01-01,,,2\n"
)


def test_redcap_repeat_rows_inherit_base_values(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", REDCAP)
    assert detect_format(path) == "redcap"
    frame = read_table(path)
    relapses = frame[frame["redcap_repeat_instrument"] == "relapse"]
    assert relapses["diag_date"].tolist() == ["2015-02-03", "2015-02-03"]
    assert relapses["relapse_site"].tolist() == ["bm", "cns"]
    assert relapses["_source_row"].tolist() == [2, 3]
    plain = read_table(path, ReaderOptions(format="redcap", inherit=False))
    assert plain.loc[1, "diag_date"] is None


def test_redcap_bad_record_id(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", REDCAP)
    with pytest.raises(ReaderError, match="record id column 'study_id' not found"):
        read_table(path, ReaderOptions(record_id="study_id"))


ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"


def fhir_bundle() -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "gender": "female",
                    "birthDate": "2010-05-03",
                    "deceasedBoolean": False,
                    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2100512"}],
                    "name": [{"family": "Durand", "given": ["Léa"]}],
                },
            },
            {
                "fullUrl": "urn:uuid:c1",
                "resource": {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/p1"},
                    "onsetDateTime": "2014-03-09",
                    "code": {
                        "coding": [
                            {"system": "http://snomed.info/sct", "code": "91861009"},
                            {"system": ICDO3, "code": "9836/3"},
                        ]
                    },
                    "bodySite": [{"coding": [{"system": ICDO3, "code": "C42.1"}]}],
                },
            },
            {
                "fullUrl": "urn:uuid:o1",
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "26464-8"}]},
                    "focus": [{"reference": "Condition/c1"}],
                    "valueQuantity": {"value": 12.5, "unit": "10*9/L"},
                },
            },
        ],
    }


def test_fhir_bundle_flattens_with_selectors(tmp_path: Path) -> None:
    path = write(tmp_path, "bundle.json", json.dumps(fhir_bundle()))
    tables = read_fhir_resources(path)
    assert set(tables) == {"Patient", "Condition", "Observation"}
    patient = tables["Patient"].iloc[0]
    assert patient["gender"] == "female" and patient["deceasedBoolean"] == "false"
    assert patient["name[0].given[0]"] == "Léa"
    assert patient["identifier[system=urn:oid:1.2.250.1.213.1.4.8].value"] == "2100512"
    condition = read_table(path, ReaderOptions(resource="Condition")).iloc[0]
    assert condition[f"code.coding[system={ICDO3}].code"] == "9836/3"
    assert condition[f"bodySite[0].coding[system={ICDO3}].code"] == "C42.1"
    assert condition["_source_row"] == 2
    obs = tables["Observation"].iloc[0]
    assert obs["valueQuantity.value"] == "12.5" and obs["_fullUrl"] == "urn:uuid:o1"


def test_fhir_ndjson_and_errors(tmp_path: Path) -> None:
    resources = [e["resource"] for e in fhir_bundle()["entry"]]
    path = write(tmp_path, "r.ndjson", "\n".join(json.dumps(r) for r in resources) + "\n")
    assert read_table(path, ReaderOptions(resource="Observation"))["_source_row"].tolist() == [3]
    with pytest.raises(ReaderError, match=r"needs `resource:`.*Patient, Condition, Observation"):
        read_table(path)
    with pytest.raises(ReaderError, match="no Specimen resources"):
        read_table(path, ReaderOptions(resource="Specimen"))
    cut = write(tmp_path, "cut.json", json.dumps(fhir_bundle())[:500])
    with pytest.raises(ReaderError, match=r"invalid JSON.*truncated"):
        read_table(cut, ReaderOptions(resource="Patient"))


def test_fast_and_exact_parsers_agree(tmp_path: Path) -> None:
    from ccdp.ingest.readers.delimited import _parse, _read_fast, rows_to_frame

    text = 'id;note;n\n1;"a;b";\n2;"two\nlines"; 3 \n3;"say ""hi""";x\n'
    fast = _read_fast(text, ";", '"', 1)
    assert fast is not None
    exact = rows_to_frame(_parse(text, ";", '"', tmp_path), 1, tmp_path)
    assert fast.to_dict("list") == exact.to_dict("list")
    assert fast["note"].tolist() == ["a;b", "two\nlines", 'say "hi"']
    assert fast["n"].tolist() == [None, " 3 ", "x"]


LANGUAGE_SAMPLES = {
    "pl": "id;płeć;miejscowość;stan\n1;mężczyzna;Łódź;żyje\n2;kobieta;Kraków;zmarł\n",
    "de": "id;Geschlecht;Größe;Straße\n1;männlich;groß;Hauptstraße\n2;weiblich;klein;Müllerstr\n",
    "fr": "id;sexe;prénom\n1;H;Léa\n2;F;Zoé\n",
    "pt": "id;sexo;situação;observação\n1;masculino;óbito;não\n2;feminino;vivo;sim\n",
    "es": "id;sexo;situación;año\n1;niño;¿vivo?;2010\n2;niña;fallecido;2011\n",
}


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("lang", "encoding"),
    [
        (lang, enc)
        for lang in sorted(LANGUAGE_SAMPLES)
        for enc in ("utf-8", "cp1252", "cp1250", "iso8859_2", "utf-16")
        if _encodable(LANGUAGE_SAMPLES[lang], enc)
    ],
)
def test_encoding_detection_across_the_partnership(tmp_path: Path, lang: str, encoding: str):
    text = LANGUAGE_SAMPLES[lang]
    frame = read_table(write(tmp_path, "x.csv", text.encode(encoding)))
    header = text.split("\n", 1)[0].split(";")
    assert list(frame.columns[:-1]) == header
    assert frame.iloc[1, 1] == text.split("\n")[2].split(";")[1]

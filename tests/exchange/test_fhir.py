"""FHIR export and import: a synthetic store to mCODE/PCSP Bundles and back, checked against
the FHIR models (fhir.resources R4B) and against the IGs' own FSH rules (tests/exchange/
fhir_profiles.py), with the ingest's checks on the way back in."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from ccdp.exchange.fhir import export_store, import_bundles
from ccdp.exchange.fhir_read import FhirImportError
from ccdp.ingest.pipeline import ingest_native
from ccdp.ingest.pseudonym import pseudonym
from ccdp.model import load_model
from ccdp.store import NodeStore
from ccdp.store.config import pseudonym_key
from ccdp.synth import generate
from tests.conftest import run_ccdp
from tests.exchange import fhir_profiles

PATIENTS = 300

NOT_CARRIED = {(f"population.{f.name}") for f in load_model().table("population").fields}
"""What a FHIR export cannot carry: the population at risk is not patient data (no Bundle holds
it). Every field of every other table goes out and comes back."""


@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fhir_src")
    generate(base / "synth", countries="FR", patients=PATIENTS, seed=1)
    store = base / "source.duckdb"
    ingest_native(store, base / "synth" / "FR", progress=False)
    return store


@pytest.fixture(scope="module")
def exported(source_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fhir_out") / "export"
    with NodeStore(source_store, read_only=True) as ns:
        export_store(ns, out, batch_size=128)
    return out


def _bundles(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(folder.glob("*.ndjson"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def _table(store: Path, table: str) -> pd.DataFrame:
    tdef = load_model().table(table)
    cols = ", ".join(f'"{f.name}"' for f in tdef.fields)
    keys = ", ".join(tdef.primary_key)
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(f"SELECT {cols} FROM {table} ORDER BY {keys}").df().astype(str)


def test_round_trip_keeps_every_field_fhir_carries(
    exported: Path, source_store: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.duckdb"
    report = import_bundles(exported, target, progress=False, batch_size=100)  # 3 ingests
    assert report.quarantined == 0 and not report.pseudonymised
    assert report.tables["patient"].accepted == PATIENTS
    differing = set()
    for table in load_model().table_names:
        before, after = _table(source_store, table), _table(target, table)
        assert len(before) > 0, table
        for field in before.columns:
            if len(before) != len(after) or not before[field].equals(after[field]):
                differing.add(f"{table}.{field}")
    assert differing == NOT_CARRIED


def test_same_store_gives_same_files(exported: Path, source_store: Path, tmp_path: Path) -> None:
    done: list[int] = []
    with NodeStore(source_store, read_only=True) as ns:
        summary = export_store(ns, tmp_path / "again", progress=done.append, batch_size=128)
    files = sorted(p.name for p in exported.glob("*.ndjson"))
    assert files == ["bundles-00000.ndjson", "bundles-00001.ndjson", "bundles-00002.ndjson"]
    for name in files:
        assert (exported / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert done == [128, 256, PATIENTS]
    assert summary.patients == PATIENTS and summary.records["Bundle"] == PATIENTS
    resources = [e["resource"]["resourceType"] for b in _bundles(exported) for e in b["entry"]]
    assert {k: v for k, v in summary.records.items() if k != "Bundle"} == {
        k: resources.count(k) for k in set(resources)
    }
    assert any("provisional" in note for note in summary.notes)


def test_every_bundle_parses_with_the_fhir_models(exported: Path) -> None:
    for bundle in _bundles(exported):
        parsed = Bundle.model_validate(bundle)
        assert len(parsed.entry or []) == len(bundle["entry"])
        for entry in bundle["entry"]:
            res = entry["resource"]
            get_fhir_model_class(res["resourceType"]).model_validate(res)


def test_every_resource_passes_the_ig_profiles(exported: Path) -> None:
    errors, warnings = [], set()
    checked = set()
    for bundle in _bundles(exported):
        for res in [bundle, *(e["resource"] for e in bundle["entry"])]:
            for finding in fhir_profiles.check(res):
                if finding.level == "error":
                    errors.append(str(finding))
                else:
                    warnings.add(f"{finding.profile} {finding.element}: {finding.message[:60]}")
            checked |= {p for p in res["meta"]["profile"] if fhir_profiles.profile(p)}
    assert errors == []
    # mCODE's cancerPatient entry slice (1..1, by type: the checker skips type slices)
    for bundle in _bundles(exported):
        assert [e["resource"]["resourceType"] for e in bundle["entry"]].count("Patient") == 1
    # every IG profile the export claims is one the checker found in the FSH sources
    claimed = {
        p for b in _bundles(exported) for e in b["entry"] for p in e["resource"]["meta"]["profile"]
    }
    assert {p for p in claimed if not p.startswith("urn:ccdp:")} <= checked
    print("\n".join(sorted(warnings)))


def _first(bundles: list[dict[str, Any]], kind: str, profile_part: str = "") -> dict[str, Any]:
    for bundle in bundles:
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res["resourceType"] == kind and any(
                profile_part in p for p in res["meta"]["profile"]
            ):
                return copy.deepcopy(res)
    raise AssertionError(f"no {kind} in the export")


def test_the_checker_catches_violations(exported: Path) -> None:
    bundles = _bundles(exported)
    patient = _first(bundles, "Patient")
    assert fhir_profiles.check(patient) == [] or all(
        f.level == "warning" for f in fhir_profiles.check(patient)
    )
    del patient["identifier"]
    del patient["name"][0]["_family"]
    found = {(f.profile, f.element) for f in fhir_profiles.check(patient) if f.level == "error"}
    assert found == {("PatientPcsp", "identifier"), ("PatientPcsp", "name.family")}

    condition = _first(bundles, "Condition", "primaryCancer")
    condition["extension"][0]["valueCodeableConcept"]["coding"][0]["system"] = (
        "http://snomed.info/sct"
    )
    del condition["code"]
    found = {(f.profile, f.element) for f in fhir_profiles.check(condition) if f.level == "error"}
    assert ("ConditionPrimaryCancerPcsp", "code") in found
    assert (
        "ConditionPrimaryCancerPcsp",
        "extension[histologyMorphologyBehavior].value[x]",
    ) in found

    stage = _first(bundles, "Observation", "stage-group")
    stage["code"]["coding"][0]["code"] = "21902-3"  # not in ObservationCodesStageGroupVS
    found = {(f.profile, f.element) for f in fhir_profiles.check(stage) if f.level == "error"}
    assert found == {("CancerStageGroup", "code")}

    status = _first(bundles, "Observation", "disease-status")
    status["code"]["coding"][0]["code"] = "21914-7"  # mCODE fixes LOINC 97509-4
    found = {(f.profile, f.element) for f in fhir_profiles.check(status) if f.level == "error"}
    assert found == {("CancerDiseaseStatus", "code")}

    bundle = copy.deepcopy(bundles[0])
    bundle["type"] = "document"
    del bundle["entry"]
    found = {(f.profile, f.element) for f in fhir_profiles.check(bundle) if f.level == "error"}
    assert found == {("MCODEPatientBundle", "type"), ("MCODEPatientBundle", "entry")}


def test_the_checker_reads_the_readme_s_required_patient_elements() -> None:
    # ../shared/specs/fhir/README.md: identifier, name.family, name.given, gender, birthDate,
    # contact.telecom are 1.. in Patient-eu-pcsp
    prof = fhir_profiles.profile("http://hl7.eu/fhir/ig/pcsp/StructureDefinition/Patient-eu-pcsp")
    assert prof is not None
    required = {r.path for r in prof.rules if r.min == 1}
    assert required == {
        "identifier",
        "name.family",
        "name.given",
        "gender",
        "birthDate",
        "contact.telecom",
    }


def _write(path: Path, bundles: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b) + "\n" for b in bundles), encoding="utf-8")
    return path


def test_import_names_file_line_resource_and_element(exported: Path, tmp_path: Path) -> None:
    bundles = _bundles(exported)[:3]
    bad = tmp_path / "bad.ndjson"
    bad.write_text(json.dumps(bundles[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(FhirImportError, match=r"bad.ndjson, line 2: not JSON"):
        import_bundles(bad, tmp_path / "s1.duckdb", progress=False)

    odd = copy.deepcopy(bundles)
    res = odd[1]["entry"][0]["resource"]
    res["meta"]["profile"] = ["http://example.org/StructureDefinition/other"]
    with pytest.raises(
        FhirImportError, match=rf"line 2: entry\[0\] Patient/{res['id']}, element meta.profile"
    ):
        import_bundles(_write(tmp_path / "odd.ndjson", odd), tmp_path / "s2.duckdb", progress=False)

    dangling = copy.deepcopy(bundles)
    cond = next(
        e["resource"] for e in dangling[2]["entry"] if e["resource"]["resourceType"] == "Condition"
    )
    cond["subject"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}
    with pytest.raises(
        FhirImportError,
        match=rf"line 3: entry\[\d+\] Condition/{cond['id']}, element subject: .* names no",
    ):
        import_bundles(
            _write(tmp_path / "d.ndjson", dangling), tmp_path / "s3.duckdb", progress=False
        )
    assert not (tmp_path / "s3.duckdb").exists()


def test_a_missing_data_element_quarantines_its_row(exported: Path, tmp_path: Path) -> None:
    bundles = _bundles(exported)[:5]
    cond = next(
        e["resource"] for e in bundles[3]["entry"] if e["resource"]["resourceType"] == "Condition"
    )
    del cond["bodySite"]
    store = tmp_path / "q.duckdb"
    report = import_bundles(_write(tmp_path / "one.ndjson", bundles), store, progress=False)
    assert report.tables["tumour"].quarantined >= 1
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute(
            "SELECT source_file, source_row, reasons FROM quarantine WHERE table_name = 'tumour'"
        ).fetchall()
    assert any(
        r[0].endswith("one.ndjson") and r[1] == 4 and "topography" in str(r[2]) for r in rows
    )


@pytest.mark.parametrize(
    "identify",
    [
        lambda p: p.update(name=[{"family": "Martin", "given": ["Léa"]}]),
        lambda p: p["identifier"][0].update(system="urn:oid:1.2.250.1.71.4.2.1"),  # a NIR
    ],
    ids=["name", "hospital-identifier"],
)
def test_an_identified_bundle_is_pseudonymised(
    exported: Path, tmp_path: Path, identify: Any
) -> None:
    bundle = _bundles(exported)[0]
    patient = bundle["entry"][0]["resource"]
    original = patient["identifier"][0]["value"]
    identify(patient)
    store = tmp_path / "p.duckdb"
    report = import_bundles(_write(tmp_path / "named.ndjson", [bundle]), store, progress=False)
    assert report.pseudonymised
    with duckdb.connect(str(store), read_only=True) as con:
        (stored,) = con.execute("SELECT patient_id FROM patient").fetchone() or ("",)
        names = con.execute("SELECT * FROM patient").df().to_string()
    assert stored == pseudonym(pseudonym_key(store), original)
    assert original not in names and "Martin" not in names


def test_cli_export_and_import(source_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_export"
    summary = json.loads(
        run_ccdp("export", "fhir", "--store", source_store, "--out", out, "--json").stdout
    )
    assert summary["format"] == "fhir" and summary["patients"] == PATIENTS
    assert (out / "bundles-00000.ndjson").is_file() and (out / "ccdp-export.json").is_file()
    report = json.loads(
        run_ccdp("import", "fhir", out, "--store", tmp_path / "cli.duckdb", "--json").stdout
    )
    assert report["tables"]["patient"]["accepted"] == PATIENTS and report["quarantined"] == 0


EDGE_ROWS: dict[str, list[dict[str, str]]] = {
    "patient": [
        {
            "patient_id": "E1",
            "sex": "unknown",
            "birth_date": "2010-03",
            "country": "DE",
            "vital_status": "unknown",
            "consent": "DUO:0000007 MONDO:0004992",
        },
        {
            "patient_id": "E2",
            "sex": "male",
            "birth_date": "2008-06-30",
            "country": "DE",
            "vital_status": "dead",
            "last_contact_date": "2015-02-01",
            "death_date": "2015-02-01",
            "cause_of_death": "unknown",
        },
    ],
    "tumour": [
        {
            "tumour_id": "T1",
            "patient_id": "E1",
            "diagnosis_date": "2014-05-02",
            "topography": "C42.1",
            "morphology": "9837",
            "behaviour": "3",
            "basis_of_diagnosis": "5",
            "laterality": "not_paired",
            "immunophenotype": "t",
            "wbc_at_diagnosis": "12.5",
            "cns_status": "CNS3",
            "stage": "III",
            "risk_group": "S2",
            "frontline_end_date": "2016-01-10",
        },
        {
            "tumour_id": "T2",
            "patient_id": "E2",
            "diagnosis_date": "2012-01-20",
            "topography": "C64.9",
            "morphology": "8960",
            "behaviour": "3",
            "laterality": "right",
            "stage_system": "toronto_tier2",
        },
    ],
    "event": [
        {
            "event_id": "V1",
            "tumour_id": "T1",
            "event_type": "relapse",
            "event_date": "2016-06-01",
            "relapse_site": "testis",
            "bm_blasts_pct": "5",
        },
        {
            "event_id": "V2",
            "tumour_id": "T1",
            "event_type": "remission",
            "event_date": "2014-06-10",
            "bm_blasts_pct": "0.5",
        },
        {
            "event_id": "V3",
            "tumour_id": "T2",
            "event_type": "progression",
            "event_date": "2013-01-01",
        },
        {
            "event_id": "V4",
            "tumour_id": "T2",
            "event_type": "second_malignancy",
            "event_date": "2014-01-01",
        },
        {"event_id": "V5", "tumour_id": "T2", "event_type": "death", "event_date": "2015-02-01"},
    ],
    "treatment": [
        {"treatment_id": "X1", "tumour_id": "T1", "type": "chemotherapy"},
        {
            "treatment_id": "X2",
            "tumour_id": "T1",
            "type": "car_t",
            "agent": "tisagenlecleucel",
            "protocol": "ALL-REZ",
            "start_date": "2016-07-01",
        },
        {
            "treatment_id": "X3",
            "tumour_id": "T1",
            "type": "hsct",
            "agent": "allogeneic",
            "start_date": "2016-09-01",
            "end_date": "2016-09-20",
        },
        {"treatment_id": "X4", "tumour_id": "T2", "type": "radiotherapy"},
        {"treatment_id": "X5", "tumour_id": "T2", "type": "surgery", "start_date": "2012-02-01"},
        {
            "treatment_id": "X6",
            "tumour_id": "T2",
            "type": "other",
            "agent": "watchful waiting",
            "end_date": "2012-03-01",
        },
        {
            "treatment_id": "X7",
            "tumour_id": "T2",
            "type": "targeted",
            "agent": "larotrectinib",
            "start_date": "2012-03-01",
            "end_date": "2012-09-01",
        },
    ],
    "biomarker": [
        {
            "tumour_id": "T1",
            "marker": "MRD_day33",
            "value": "0.0500",
            "unit": "%",
            "date": "2014-06-04",
        },
        {
            "tumour_id": "T1",
            "marker": "MRD_day78",
            "value": "0.25",
            "unit": "%",
            "date": "2014-07-19",
        },
        {"tumour_id": "T1", "marker": "BCR-ABL1", "date": "2014-05-03"},
        {
            "tumour_id": "T2",
            "marker": "NTRK_copies",
            "value": "12",
            "unit": "copies",
            "date": "2012-01-25",
        },
    ],
    "specimen": [
        {"specimen_id": "S1", "tumour_id": "T1", "type": "rna"},
        {"specimen_id": "S3", "tumour_id": "T1"},
        {
            "specimen_id": "S2",
            "tumour_id": "T2",
            "type": "tumour_tissue",
            "collection_date": "2012-02-01",
            "available": "true",
        },
    ],
    "trial_enrolment": [{"patient_id": "E1", "trial": "EDGE-TRIAL"}],
}


def test_round_trip_of_the_rare_cases(tmp_path: Path) -> None:
    """Month-precision birth dates, unknown vital status, a stage without a system, events of
    every type, treatments without dates, a number that is not a plain decimal: all come back."""
    from ccdp.ingest.pipeline import ingest_frames

    source = tmp_path / "edge.duckdb"
    frames = {t: pd.DataFrame(rows, dtype=object) for t, rows in EDGE_ROWS.items()}
    first = ingest_frames(source, frames, "edge", progress=False)
    assert first.quarantined == 0, first.edits
    out = tmp_path / "edge_out"
    with NodeStore(source, read_only=True) as ns:
        export_store(ns, out)
    for bundle in _bundles(out):  # data-absent-reason forms (_performedDateTime ...) parse too
        Bundle.model_validate(bundle)
        for entry in bundle["entry"]:
            res = entry["resource"]
            get_fhir_model_class(res["resourceType"]).model_validate(res)
    assert all(
        not f
        for b in _bundles(out)
        for e in b["entry"]
        for f in fhir_profiles.check(e["resource"])
        if f.level == "error"
    )
    target = tmp_path / "edge_back.duckdb"
    import_bundles(out, target, progress=False)
    for table in EDGE_ROWS:
        before, after = _table(source, table), _table(target, table)
        assert len(before) == len(EDGE_ROWS[table])
        pd.testing.assert_frame_equal(before, after, obj=table)


def test_terms_come_from_ccdp_not_from_the_ig_fragment() -> None:
    """The PCSP IG's ICD-O-3 fragment labels 9181/3, 9186/3 and 9510/3 (and ICCC-3 081) with
    terms of other codes: the export writes ccdp's own terms for them."""
    from ccdp.exchange.fhir_write import bundles
    from ccdp.exchange.source import PatientBatch
    from ccdp.terminology.iccc import iccc_codes
    from ccdp.terminology.icdo3 import morphology_codes

    fsh = (fhir_profiles.SPECS / "pcsp/input/fsh/codesystems.fsh").read_text(encoding="utf-8")
    ig_terms = dict(re.findall(r'^\* #(\S+) "([^"]+)"', fsh, re.M))
    ours = dict(zip(morphology_codes()["code"], morphology_codes()["label"], strict=True))
    recode = iccc_codes().set_index("recode")["subgroup_label"].to_dict()
    morphs = ["9181", "9186", "9510"]
    tumours = pd.DataFrame(
        {
            "tumour_id": [f"T{m}" for m in morphs],
            "patient_id": "P1",
            "diagnosis_date": pd.Timestamp("2010-01-01"),
            "topography": "C40.2",
            "morphology": morphs,
            "behaviour": 3,
            "iccc_recode": "081",
        }
    )
    empty = {
        t: pd.DataFrame({"tumour_id": []}) for t in ("event", "treatment", "biomarker", "specimen")
    }
    batch = PatientBatch(
        number=0,
        patient=pd.DataFrame({"patient_id": ["P1"], "sex": "male", "country": "FR"}),
        tumour=tumours,
        trial_enrolment=pd.DataFrame({"patient_id": []}),
        **empty,
    )
    (bundle,) = bundles(batch)
    conditions = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
    ]
    assert len(conditions) == 3
    for cond, morph in zip(conditions, morphs, strict=True):
        icdo, iccc = cond["code"]["coding"]
        assert icdo["code"] == f"{morph}/3" and icdo["display"] == ours[morph]
        assert icdo["display"] != ig_terms[f"{morph}/3"]
        assert iccc["code"] == "081" and iccc["display"] == recode["081"] != ig_terms["081"]


def test_a_folder_without_bundles_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.ndjson").write_text("\n", encoding="utf-8")
    with pytest.raises(FhirImportError, match=r"no Bundle in 1 file"):
        import_bundles(tmp_path / "in", tmp_path / "s.duckdb", progress=False)
    (tmp_path / "in" / "empty.ndjson").unlink()
    with pytest.raises(FhirImportError, match=r"no .json or .ndjson file"):
        import_bundles(tmp_path / "in", tmp_path / "s.duckdb", progress=False)


def test_a_json_file_error_names_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"resourceType": "Bundle",\n "entry": [}\n', encoding="utf-8")
    with pytest.raises(FhirImportError, match=r"bad.json, line 2: not JSON"):
        import_bundles(path, tmp_path / "s.duckdb", progress=False)


def test_import_reads_a_single_json_bundle(exported: Path, tmp_path: Path) -> None:
    bundle = _bundles(exported)[7]
    assert sum(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"]) == 1
    path = tmp_path / "one.json"
    path.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
    report = import_bundles(path, tmp_path / "one.duckdb", progress=False)
    assert report.tables["patient"].accepted == 1
    assert report.tables["tumour"].accepted == sum(
        e["resource"]["resourceType"] == "Condition" and "occurredFollowing" not in json.dumps(e)
        for e in bundle["entry"]
    )


def test_a_pseudonymised_store_keeps_its_pseudonyms(tmp_path: Path) -> None:
    """A store ingested with direct identifiers holds pseudonyms; its export has no names, so
    the import keeps the pseudonyms as they are (not a pseudonym of a pseudonym)."""
    generate(tmp_path / "synth", countries="KE", patients=40, seed=5, with_identifiers=True)
    source = tmp_path / "psn.duckdb"
    assert ingest_native(source, tmp_path / "synth" / "KE", progress=False).pseudonymised
    with NodeStore(source, read_only=True) as ns:
        export_store(ns, tmp_path / "out")
    target = tmp_path / "back.duckdb"
    assert not import_bundles(tmp_path / "out", target, progress=False).pseudonymised
    for table in ("patient", "tumour", "treatment"):
        before, after = _table(source, table), _table(target, table)
        assert before.iloc[:, 0].str.startswith("psn_").all()
        pd.testing.assert_frame_equal(before, after, obj=table)

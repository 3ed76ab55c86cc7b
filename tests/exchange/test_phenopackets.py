"""Phenopackets v2 export: every document read back by the GA4GH protobuf parser with unknown
fields refused, and its values checked against the store it came from (DuckDB queries, the
ncit_icdo3 table, dateutil's calendar arithmetic)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pytest
from dateutil.relativedelta import relativedelta
from google.protobuf.json_format import MessageToDict, Parse, ParseError
from phenopackets import Phenopacket

from ccdp.exchange.phenopackets import export_store
from ccdp.exchange.phenopackets_terms import age, ncit_for_icdo3
from ccdp.store import NodeStore
from tests.conftest import run_ccdp

_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A 300-patient synthetic store (ccdp synth + ingest), exported once: (store, out, docs)."""
    root = tmp_path_factory.mktemp("pheno")
    run_ccdp("synth", root / "syn", "--countries", "FR", "--patients", 300, "--seed", 7)
    store = root / "fr.duckdb"
    run_ccdp("ingest", root / "syn" / "FR", "--store", store)
    out = root / "out"
    out.mkdir()
    seen: list[int] = []
    with NodeStore(store, read_only=True) as ns:
        summary = export_store(ns, out, progress=seen.append)
    assert seen == [300] and summary.patients == 300
    docs = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]
    return store, out, docs


def _query(store: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _by_id(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in docs}


def _plus(birth: date, duration: str) -> date:
    """`birth` plus an ISO 8601 duration, by dateutil (the reference, not ccdp's arithmetic)."""
    m = _DURATION.match(duration)
    assert m, duration
    y, mo, d = (int(g or 0) for g in m.groups())
    return birth + relativedelta(years=y, months=mo, days=d)


def _age(element: dict[str, Any]) -> str:
    return str(element["age"]["iso8601duration"])


def test_every_line_parses_strictly_one_per_patient(synth: Any) -> None:
    store, out, _ = synth
    ids = []
    for line in (out / "phenopackets-00000.jsonl").read_text(encoding="utf-8").splitlines():
        packet = Parse(line, Phenopacket(), ignore_unknown_fields=False)
        assert packet.meta_data.phenopacket_schema_version == "2.0"
        ids.append(packet.id)
    assert ids == [r[0] for r in _query(store, "SELECT patient_id FROM patient ORDER BY 1")]


def test_parse_refuses_an_unknown_field(synth: Any) -> None:
    """The strict parse above can fail: a field the schema does not define is refused."""
    _, _, docs = synth
    doc = json.loads(json.dumps(docs[0]))
    Parse(json.dumps(doc), Phenopacket(), ignore_unknown_fields=False)
    doc["subject"]["ageAtDiagnosis"] = "P5Y"
    with pytest.raises(ParseError, match="ageAtDiagnosis"):
        Parse(json.dumps(doc), Phenopacket(), ignore_unknown_fields=False)


def test_subject_matches_the_store(synth: Any) -> None:
    store, _, docs = synth
    packets = _by_id(docs)
    rows = _query(
        store,
        "SELECT p.patient_id, sex, vital_status, birth_date, coalesce(death_date, "
        "last_contact_date), death_date, min(t.diagnosis_date) FROM patient p "
        "JOIN tumour t USING (patient_id) GROUP BY ALL",
    )
    assert len(rows) == len(packets)
    status = {"alive": "ALIVE", "dead": "DECEASED", "unknown": "UNKNOWN_STATUS"}
    for pid, sex, vital, birth, last, death, first_dx in rows:
        subject = packets[pid]["subject"]
        assert subject["id"] == pid
        assert subject["sex"] == {"male": "MALE", "female": "FEMALE"}.get(sex, "UNKNOWN_SEX")
        assert subject["vitalStatus"]["status"] == status[vital]
        assert _plus(birth, _age(subject["timeAtLastEncounter"])) == (last or first_dx)
        if death is not None:
            assert _plus(birth, _age(subject["vitalStatus"]["timeOfDeath"])) == death
        if last is not None:
            assert subject["vitalStatus"].get("survivalTimeInDays", 0) == (last - first_dx).days
        assert "dateOfBirth" not in subject


def test_diseases_are_the_tumours_with_their_codes(synth: Any) -> None:
    store, _, docs = synth
    packets = _by_id(docs)
    want: dict[str, list[tuple[str, str, date]]] = {}
    for pid, morph, beh, topo, dx, birth in _query(
        store,
        "SELECT patient_id, morphology, behaviour, topography, diagnosis_date, birth_date "
        "FROM tumour JOIN patient USING (patient_id) ORDER BY tumour_id",
    ):
        want.setdefault(pid, []).append((f"ICDO3:{morph}/{beh}", f"ICDO3:{topo}", dx))
        got = [d for d in packets[pid]["diseases"] if d["term"]["id"] == f"ICDO3:{morph}/{beh}"]
        assert any(_plus(birth, _age(d["onset"])) == dx for d in got)
    for pid, doc in packets.items():
        got = [(d["term"]["id"], d["primarySite"]["id"]) for d in doc["diseases"]]
        assert got == [(t, s) for t, s, _ in want[pid]]


def test_stage_and_laterality(synth: Any) -> None:
    store, _, docs = synth
    packets = _by_id(docs)
    hpo = {"left": "HP:0012835", "right": "HP:0012834", "bilateral": "HP:0012832"}
    for pid, system, stage, side in _query(
        store, "SELECT patient_id, stage_system, stage, laterality FROM tumour"
    ):
        (disease,) = packets[pid]["diseases"]  # synthetic patients have one tumour
        stages = [s["id"] for s in disease.get("diseaseStage", [])]
        assert stages == ([f"CCDP:tumour.stage.{system}.{quote(stage, safe='')}"] if stage else [])
        assert disease.get("laterality", {}).get("id") == hpo.get(side)


def test_biosamples_are_the_specimens(synth: Any) -> None:
    store, _, docs = synth
    packets = _by_id(docs)
    ncit = ncit_for_icdo3()
    rows = _query(
        store,
        "SELECT s.specimen_id, t.patient_id, s.type, t.morphology, t.behaviour, "
        "s.collection_date, p.birth_date FROM specimen s JOIN tumour t USING (tumour_id) "
        "JOIN patient p USING (patient_id)",
    )
    samples = {b["id"]: (pid, b) for pid, d in packets.items() for b in d.get("biosamples", [])}
    assert set(samples) == {r[0] for r in rows}
    mapped = 0
    for sid, pid, kind, morph, beh, collected, birth in rows:
        owner, sample = samples[sid]
        assert owner == pid and sample["individualId"] == pid
        assert sample["sampleType"]["id"] == f"CCDP:specimen.type.{kind}"
        expected = ncit.get((morph, beh), (f"ICDO3:{morph}/{beh}", ""))[0]
        assert sample["histologicalDiagnosis"]["id"] == expected
        mapped += expected.startswith("NCIT:")
        if collected is not None:
            assert _plus(birth, _age(sample["timeOfCollection"])) == collected
    assert mapped > 0, "the synthetic store has mapped tumours (ALL 9836/3, Wilms 8960/3...)"


def test_treatments_are_medical_actions_on_their_tumour(synth: Any) -> None:
    store, _, docs = synth
    packets = _by_id(docs)
    rows = _query(
        store,
        "SELECT t.patient_id, x.type, t.morphology, t.behaviour, x.start_date, x.end_date, "
        "p.birth_date FROM treatment x JOIN tumour t USING (tumour_id) "
        "JOIN patient p USING (patient_id) ORDER BY x.treatment_id",
    )
    by_patient: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_patient.setdefault(r[0], []).append(r)
    for pid, doc in packets.items():
        actions = doc.get("medicalActions", [])
        assert len(actions) == len(by_patient.get(pid, []))
        for action, (_, kind, morph, beh, start, end, birth) in zip(
            actions, by_patient.get(pid, []), strict=True
        ):
            assert action["treatmentTarget"]["id"] == f"ICDO3:{morph}/{beh}"
            if kind in ("surgery", "hsct"):
                when = action["procedure"].get("performed")
                assert when is None or _plus(birth, _age(when)) == start
                continue
            regimen = action["therapeuticRegimen"]
            if start is not None:
                assert _plus(birth, _age(regimen["startTime"])) == start
            if end is not None:
                assert _plus(birth, _age(regimen["endTime"])) == end
                assert regimen["regimenStatus"] == "COMPLETED"


def test_measurements_are_the_biomarkers(synth: Any) -> None:
    store, _, docs = synth
    rows = _query(
        store,
        "SELECT t.patient_id, b.marker, b.value, b.unit FROM biomarker b JOIN tumour t "
        "USING (tumour_id)",
    )

    def as_text(value: dict[str, Any]) -> str:
        if "quantity" in value:
            return repr(round(value["quantity"].get("value", 0.0), 9))
        return str(value["ontologyClass"]["label"])

    def number_or_text(value: str) -> str:
        try:
            return repr(round(float(value), 9))
        except ValueError:
            return value

    got = sorted(
        (d["id"], m["assay"]["label"], as_text(m["value"]))
        for d in docs
        for m in d.get("measurements", [])
    )
    assert got == sorted((pid, marker, number_or_text(v)) for pid, marker, v, _ in rows)
    units = {
        m["value"]["quantity"]["unit"]["id"]
        for d in docs
        for m in d.get("measurements", [])
        if "quantity" in m["value"]
    }
    assert units == {"UCUM:%"}


def _curies(node: Any, out: set[str]) -> set[str]:
    """Every CURIE prefix in a document: the `id` of each OntologyClass and ExternalReference."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "id" and isinstance(value, str) and ":" in value:
                out.add(value.split(":", 1)[0])
            elif key != "metaData":
                _curies(value, out)
    elif isinstance(node, list):
        for item in node:
            _curies(item, out)
    return out


def test_every_prefix_used_is_declared_and_only_those(synth: Any) -> None:
    _, _, docs = synth
    seen: set[str] = set()
    for doc in docs:
        declared = {r["namespacePrefix"] for r in doc["metaData"]["resources"]}
        used = _curies(doc, set())
        assert used == declared, doc["id"]
        seen |= used
        for r in doc["metaData"]["resources"]:
            assert all(r.get(k) for k in ("id", "name", "url", "version", "iriPrefix")), r
    assert {"ICDO3", "NCIT", "CCDP", "NCBITaxon", "UBERON", "HP", "UCUM"} <= seen


def month_store(store: Path) -> Path:
    """One patient born in a month (stored on the 15th), alive, one tumour."""
    with NodeStore(store) as ns:
        ns.create()
        ns.con.execute(
            "INSERT INTO patient (patient_id, sex, birth_date, birth_date_precision, country, "
            "vital_status, last_contact_date) VALUES ('P1', 'female', DATE '2010-03-15', "
            "'month', 'FR', 'alive', DATE '2016-07-02')"
        )
        ns.con.execute(
            "INSERT INTO tumour (tumour_id, patient_id, diagnosis_date, topography, morphology, "
            "behaviour) VALUES ('T1', 'P1', DATE '2015-06-20', 'C64.9', '8960', 3)"
        )
    return store


def test_month_precision_birth_gives_no_days(tmp_path: Path) -> None:
    """A birth date known to the month (stored on the 15th) never yields a day count."""
    store = month_store(tmp_path / "m.duckdb")
    out = tmp_path / "out"
    out.mkdir()
    with NodeStore(store, read_only=True) as ns:
        export_store(ns, out)
    (line,) = (out / "phenopackets-00000.jsonl").read_text().splitlines()
    doc = MessageToDict(Parse(line, Phenopacket()))
    assert _age(doc["diseases"][0]["onset"]) == "P5Y3M"
    assert _age(doc["subject"]["timeAtLastEncounter"]) == "P6Y3M"


def insert(ns: NodeStore, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        ns.con.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))


def two_tumour_store(store: Path) -> Path:
    """A dead patient with two tumours, each with its own treatment; a biomarker, a specimen."""
    with NodeStore(store) as ns:
        ns.create()
        insert(
            ns,
            "patient",
            [
                {
                    "patient_id": "P2",
                    "sex": "male",
                    "birth_date": date(2004, 1, 31),
                    "birth_date_precision": "day",
                    "country": "DE",
                    "vital_status": "dead",
                    "last_contact_date": date(2016, 3, 1),
                    "death_date": date(2016, 3, 1),
                    "cause_of_death": "cancer",
                }
            ],
        )
        insert(
            ns,
            "tumour",
            [
                {
                    "tumour_id": "T1",
                    "patient_id": "P2",
                    "diagnosis_date": date(2006, 2, 10),
                    "topography": "C42.1",
                    "morphology": "9836",
                    "behaviour": 3,
                    "stage_system": "toronto_tier2",
                    "stage": "CNS1",
                },
                {
                    "tumour_id": "T2",
                    "patient_id": "P2",
                    "diagnosis_date": date(2014, 5, 2),
                    "topography": "C40.2",
                    "morphology": "9180",
                    "behaviour": 3,
                    "laterality": "left",
                },
            ],
        )
        insert(
            ns,
            "treatment",
            [
                {
                    "treatment_id": "X1",
                    "tumour_id": "T1",
                    "type": "chemotherapy",
                    "protocol": "AIEOP-BFM ALL 2000",
                    "start_date": date(2006, 2, 12),
                    "end_date": date(2008, 2, 1),
                },
                {
                    "treatment_id": "X2",
                    "tumour_id": "T2",
                    "type": "surgery",
                    "agent": "limb salvage",
                    "start_date": date(2014, 9, 1),
                },
            ],
        )
        insert(
            ns,
            "biomarker",
            [
                {
                    "tumour_id": "T1",
                    "marker": "MRD_day33",
                    "value": "0",
                    "unit": "%",
                    "date": date(2006, 3, 15),
                },
            ],
        )
        insert(
            ns,
            "specimen",
            [
                {"specimen_id": "S1", "tumour_id": "T2", "type": "dna", "available": True},
            ],
        )
    return store


def test_two_tumours_each_with_its_own_actions_samples_and_stage(tmp_path: Path) -> None:
    """A second primary: each treatment targets its own tumour, each specimen is diagnosed
    with its own tumour's term (NCIt where mapped), and a dead patient's death is an age."""
    store = two_tumour_store(tmp_path / "two.duckdb")
    out = tmp_path / "out"
    out.mkdir()
    with NodeStore(store, read_only=True) as ns:
        export_store(ns, out)
    (line,) = (out / "phenopackets-00000.jsonl").read_text().splitlines()
    doc = MessageToDict(Parse(line, Phenopacket(), ignore_unknown_fields=False))
    all_b, osteo = "ICDO3:9836/3", "ICDO3:9180/3"
    assert [d["term"]["id"] for d in doc["diseases"]] == [all_b, osteo]
    assert doc["diseases"][0]["diseaseStage"][0]["id"] == "CCDP:tumour.stage.toronto_tier2.CNS1"
    assert doc["diseases"][1]["laterality"]["id"] == "HP:0012835"
    assert "laterality" not in doc["diseases"][0]
    regimen, surgery = doc["medicalActions"]
    assert regimen["treatmentTarget"]["id"] == all_b
    assert regimen["therapeuticRegimen"]["externalReference"]["id"] == (
        "CCDP:treatment.protocol.AIEOP-BFM%20ALL%202000"
    )
    assert surgery["treatmentTarget"]["id"] == osteo
    assert surgery["procedure"]["bodySite"]["id"] == "ICDO3:C40.2"
    (sample,) = doc["biosamples"]
    assert sample["histologicalDiagnosis"]["id"] == "NCIT:C9145"
    assert "sampledTissue" not in sample
    vital = doc["subject"]["vitalStatus"]
    assert vital["causeOfDeath"]["id"] == "CCDP:patient.cause_of_death.cancer"
    assert _plus(date(2004, 1, 31), _age(vital["timeOfDeath"])) == date(2016, 3, 1)
    assert vital["survivalTimeInDays"] == (date(2016, 3, 1) - date(2006, 2, 10)).days
    (mrd,) = doc["measurements"]
    assert mrd["value"]["quantity"]["unit"]["id"] == "UCUM:%"
    assert mrd["value"]["quantity"].get("value", 0.0) == 0.0


@pytest.mark.parametrize(
    ("birth", "when"),
    [
        (date(2000, 1, 31), date(2000, 3, 1)),
        (date(2000, 2, 29), date(2001, 2, 28)),
        (date(2000, 3, 31), date(2000, 4, 30)),
        (date(2000, 5, 26), date(2005, 3, 6)),
        (date(2003, 1, 1), date(2003, 1, 1)),
        (date(1999, 12, 31), date(2017, 12, 30)),
    ],
)
def test_age_added_back_to_birth_gives_the_date(birth: date, when: date) -> None:
    """Adding the duration to the birth date gives the date, and the months are complete
    (one month more would pass the date): years and months are never under-counted."""
    text = age(birth, when, month_precision=False)
    assert text is not None and _plus(birth, text) == when
    y, m, _ = (int(g or 0) for g in _DURATION.match(text).groups())  # type: ignore[union-attr]
    assert birth + relativedelta(years=y, months=m + 1) > when


def test_cli_exports_and_manifest(synth: Any, tmp_path: Path) -> None:
    store, _, _ = synth
    out = tmp_path / "pp"
    proc = run_ccdp("export", "phenopackets", "--store", store, "--out", out, "--json")
    summary = json.loads(proc.stdout)
    assert summary["format"] == "phenopackets"
    assert summary["standard"] == "GA4GH Phenopacket Schema v2.0"
    assert summary["patients"] == 300 == summary["records"]["Phenopacket"]
    manifest = json.loads((out / "ccdp-export.json").read_text())
    assert manifest["records"] == summary["records"]
    lines = (out / "phenopackets-00000.jsonl").read_text().splitlines()
    assert len(lines) == 300
    assert all(Parse(line, Phenopacket()).id for line in lines)
    again = run_ccdp("export", "phenopackets", "--store", store, "--out", out, check=False)
    assert again.returncode != 0 and "already holds an export" in again.stdout + again.stderr

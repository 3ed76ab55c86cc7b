"""The SQL-made Phenopackets equal, document for document, what the protobuf reference writes
(`phenopackets_build`: one message per patient, converted by json_format): every patient of a
synthetic store and of hand-made stores with the awkward cases. Ages are also checked against
dateutil's calendar arithmetic on random dates (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, timedelta
from pathlib import Path

import duckdb
import pytest
from dateutil.relativedelta import relativedelta
from google.protobuf.json_format import Parse
from hypothesis import given, settings
from hypothesis import strategies as st
from phenopackets import Phenopacket

from ccdp.exchange.phenopackets import export_store
from ccdp.exchange.phenopackets_build import Context, reference_lines
from ccdp.exchange.phenopackets_sql import AGE_MACRO
from ccdp.exchange.phenopackets_terms import age
from ccdp.exchange.source import patient_batches
from ccdp.store import NodeStore
from tests.conftest import run_ccdp
from tests.exchange.test_phenopackets import insert, month_store, two_tumour_store


def compare(store: Path, out: Path) -> tuple[int, int]:
    """Export `store` by SQL into `out`, write the reference for the same `created` time, and
    assert the documents are equal once parsed (strictly) and in the same order; return
    (documents, documents equal byte for byte)."""
    out.mkdir()
    with NodeStore(store, read_only=True) as ns:
        summary = export_store(ns, out)
        got = [ln for f in sorted(out.glob("*.jsonl")) for ln in f.read_text("utf-8").splitlines()]
        created = Parse(got[0], Phenopacket()).meta_data.created.ToDatetime(tzinfo=UTC)
        counts: dict[str, int] = defaultdict(int)
        ctx = Context(created=created)
        want = [
            line.rstrip("\n")
            for b in patient_batches(ns)
            for line in reference_lines(b, ctx, counts)
        ]
    assert len(got) == len(want) == summary.patients
    for mine, theirs in zip(got, want, strict=True):
        assert Parse(mine, Phenopacket(), ignore_unknown_fields=False) == Parse(
            theirs, Phenopacket()
        ), f"SQL:\n{mine}\nreference:\n{theirs}"
    assert summary.records == dict(counts)
    return len(got), sum(a == b for a, b in zip(got, want, strict=True))


def test_synthetic_store_equals_the_reference(tmp_path: Path) -> None:
    run_ccdp("synth", tmp_path / "syn", "--countries", "FR", "--patients", 400, "--seed", 11)
    store = tmp_path / "fr.duckdb"
    run_ccdp("ingest", tmp_path / "syn" / "FR", "--store", store)
    docs, same_bytes = compare(store, tmp_path / "out")
    assert docs == 400
    assert same_bytes == docs, "the synthetic values (finite numbers) are written byte-equal"


@pytest.mark.parametrize("build", [month_store, two_tumour_store])
def test_hand_made_stores_equal_the_reference(
    build: Callable[[Path], Path], tmp_path: Path
) -> None:
    compare(build(tmp_path / "s.duckdb"), tmp_path / "out")


def _edge_store(store: Path) -> Path:
    """Patients the synthetic data never makes: unknowns, gaps, free text with quotes, slashes,
    percent signs and non-ASCII, values that are not numbers, zero, no tumour at all."""
    with NodeStore(store) as ns:
        ns.create()
        insert(
            ns,
            "patient",
            [
                {
                    "patient_id": 'A/1 "q"',
                    "sex": "unknown",
                    "birth_date": date(2000, 2, 29),
                    "birth_date_precision": "day",
                    "country": "FR",
                    "vital_status": "unknown",
                },
                {
                    "patient_id": "B2",
                    "sex": None,
                    "birth_date": None,
                    "country": "FR",
                    "vital_status": "dead",
                    "death_date": date(2010, 5, 1),
                    "cause_of_death": "other_cause_x",
                },
                {
                    "patient_id": "C3",
                    "sex": "female",
                    "birth_date": date(2009, 1, 15),
                    "birth_date_precision": "month",
                    "country": "DE",
                    "vital_status": "alive",
                    "last_contact_date": date(2009, 1, 3),
                },
                {
                    "patient_id": "D4",
                    "sex": "male",
                    "birth_date": date(2001, 12, 31),
                    "birth_date_precision": "day",
                    "country": "DE",
                    "vital_status": "dead",
                    "death_date": date(2003, 3, 1),
                    "last_contact_date": date(2003, 2, 28),
                    "cause_of_death": "",
                },
                {
                    "patient_id": "E5",
                    "sex": "female",
                    "birth_date": date(2012, 8, 31),
                    "birth_date_precision": "day",
                    "country": "DE",
                    "vital_status": "alive",
                },
            ],
        )
        insert(
            ns,
            "tumour",
            [
                {
                    "tumour_id": "TA",
                    "patient_id": 'A/1 "q"',
                    "diagnosis_date": date(2001, 2, 28),
                    "topography": "C99.9",
                    "morphology": "9999",
                    "behaviour": 1,
                    "stage": "II b",
                    "stage_system": None,
                    "laterality": "unilateral_unspecified",
                },
                {
                    "tumour_id": "TB",
                    "patient_id": "B2",
                    "diagnosis_date": date(2009, 1, 1),
                    "topography": "C71.9",
                    "morphology": "9470",
                    "behaviour": 3,
                    "stage": "",
                    "stage_system": "unspecified",
                    "laterality": "",
                },
                {
                    "tumour_id": "TC",
                    "patient_id": "C3",
                    "diagnosis_date": date(2009, 1, 20),
                    "topography": "C64.9",
                    "morphology": "8960",
                    "behaviour": 3,
                    "stage": "é/1",
                    "stage_system": "unspecified",
                },
                {
                    "tumour_id": "TD",
                    "patient_id": "D4",
                    "diagnosis_date": date(2003, 3, 1),
                    "topography": "C22.0",
                    "morphology": "8970",
                    "behaviour": 3,
                },
            ],
        )
        insert(
            ns,
            "treatment",
            [
                {
                    "treatment_id": "X1",
                    "tumour_id": "TA",
                    "type": "chemotherapy",
                    "agent": '5% "drug" / é',
                    "protocol": "Prot 100% #1",
                    "start_date": None,
                    "end_date": date(2001, 3, 31),
                },
                {"treatment_id": "X2", "tumour_id": "TA", "type": "radiotherapy"},
                {
                    "treatment_id": "X3",
                    "tumour_id": "TB",
                    "type": "hsct",
                    "agent": "",
                    "start_date": date(2009, 6, 1),
                },
                {
                    "treatment_id": "X4",
                    "tumour_id": "TC",
                    "type": "surgery",
                    "start_date": date(2009, 1, 10),
                },
                {
                    "treatment_id": "X5",
                    "tumour_id": "TD",
                    "type": "immunotherapy",
                    "protocol": "",
                    "agent": "anti-GD2",
                    "start_date": date(2003, 2, 1),
                },
            ],
        )
        insert(
            ns,
            "biomarker",
            [
                {"tumour_id": "TA", "marker": "MRD_day33", "value": "0", "unit": "%"},
                {
                    "tumour_id": "TA",
                    "marker": "blasts",
                    "value": " 1.5e-5 ",
                    "unit": "",
                    "date": date(2001, 3, 1),
                },
                {"tumour_id": "TA", "marker": "odd", "value": 'weird/ "x"', "unit": "%"},
                {
                    "tumour_id": "TB",
                    "marker": "LDH",
                    "value": "-250.25",
                    "unit": "U/L",
                    "date": date(2008, 12, 31),
                },
                {"tumour_id": "TB", "marker": "MYCN", "value": "", "unit": None},
                {"tumour_id": "TC", "marker": "none", "value": None, "unit": None},
                {"tumour_id": "TC", "marker": "big", "value": "12345678901234567890", "unit": "%"},
            ],
        )
        insert(
            ns,
            "specimen",
            [
                {
                    "specimen_id": "S1",
                    "tumour_id": "TA",
                    "type": "tumour_tissue",
                    "available": False,
                    "collection_date": date(2001, 3, 1),
                },
                {"specimen_id": "S2", "tumour_id": "TA", "type": None},
                {"specimen_id": "S3", "tumour_id": "TB", "type": "csf", "available": True},
                {"specimen_id": "S4", "tumour_id": "TC", "type": "odd_kind"},
            ],
        )
    return store


def test_edge_cases_equal_the_reference(tmp_path: Path) -> None:
    docs, _ = compare(_edge_store(tmp_path / "edge.duckdb"), tmp_path / "out")
    assert docs == 5


@pytest.fixture(scope="module")
def sql_age() -> Callable[[list[tuple[date, date, bool]]], list[str | None]]:
    """Ages by the export's SQL macros, many dates in one query."""
    con = duckdb.connect()
    con.execute(AGE_MACRO)

    def ages(cases: list[tuple[date, date, bool]]) -> list[str | None]:
        con.execute("CREATE OR REPLACE TEMP TABLE c (i INT, b DATE, w DATE, mon BOOLEAN)")
        con.executemany("INSERT INTO c VALUES (?, ?, ?, ?)", [(i, *c) for i, c in enumerate(cases)])
        rows = con.execute(
            "SELECT pp_fmt(pp_m(b, w), pp_d(b, w), mon) FROM c ORDER BY i"
        ).fetchall()
        return [r[0] for r in rows]

    return ages


_DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))
_MONTH_ENDS = st.builds(
    lambda y, m: date(y, m, 1) + relativedelta(months=1) - timedelta(days=1),
    st.integers(1900, 2100),
    st.integers(1, 12),
)
_ANY_DATE = st.one_of(_DATES, _MONTH_ENDS, st.sampled_from([date(2000, 2, 29), date(2004, 2, 29)]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_ANY_DATE, _ANY_DATE, st.booleans()), min_size=1, max_size=50))
def test_sql_ages_equal_the_reference_and_dateutil(
    sql_age: Callable[[list[tuple[date, date, bool]]], list[str | None]],
    cases: list[tuple[date, date, bool]],
) -> None:
    """Birth dates and dates anywhere (month ends, 29 February, before birth): the SQL age is
    the reference's, and for a day-precise birth, birth + the duration by dateutil is the date
    and one month more would pass it."""
    for (birth, when, month), got in zip(cases, sql_age(cases), strict=True):
        assert got == age(birth, when, month), (birth, when, month)
        if got is None or month:
            continue
        y, m, d = _parts(got)
        assert birth + relativedelta(years=y, months=m, days=d) == when
        assert birth + relativedelta(years=y, months=m + 1) > when


def _parts(duration: str) -> tuple[int, int, int]:
    values = {"Y": 0, "M": 0, "D": 0}
    number = ""
    for ch in duration[1:]:
        if ch.isdigit():
            number += ch
        else:
            values[ch], number = int(number), ""
    return values["Y"], values["M"], values["D"]

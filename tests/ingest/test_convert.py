"""Conversions to canonical text: dates in any declared format, numbers, enums, codes."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from ccdp.ingest import convert


def s(*values: str | None) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def test_dates_tried_in_order_raw_when_none_fits() -> None:
    got = convert.to_iso_dates(
        s("03/05/2010", "2010-05-03", "40123", "31/02/2010", None, "soon"),
        ["%d/%m/%Y", "iso", "excel_serial"],
        allow_month=False,
    )
    assert got.tolist() == ["2010-05-03", "2010-05-03", "2009-11-06", "31/02/2010", None, "soon"]


def test_excel_serial_matches_excel_epoch() -> None:
    # Excel: 1 = 1900-01-01 (and the 1900 leap-year bug makes 61 = 1900-03-01).
    got = convert.to_iso_dates(s("61", "43831", "43831.75"), ["excel_serial"], False)
    assert got.tolist() == ["1900-03-01", "2020-01-01", "2020-01-01"]


def test_partial_dates_only_where_allowed() -> None:
    assert convert.to_iso_dates(s("05/2010", "2010-5"), ["%m/%Y", "iso"], True).tolist() == [
        "2010-05",
        "2010-05",
    ]
    # A date field (not partial) does not accept month precision: raw passes through.
    assert convert.to_iso_dates(s("05/2010"), ["%m/%Y"], False).tolist() == ["05/2010"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d", "%d-%m-%Y"]),
)
def test_any_declared_format_round_trips(dates: list[dt.date], fmt: str) -> None:
    text = s(*(d.strftime(fmt) for d in dates))
    got = convert.to_iso_dates(text, [fmt], allow_month=False)
    assert got.tolist() == [d.isoformat() for d in dates]


def test_value_map_is_case_insensitive_and_reports_unmapped() -> None:
    mapped, unmapped = convert.map_values(
        s("M", "f", "X", None, "?"), {"m": "male", "F": "female", "?": None}
    )
    assert mapped.tolist() == ["male", "female", "X", None, None]
    assert unmapped.tolist() == [False, False, True, False, False]


def test_missing_tokens_and_clean() -> None:
    cleaned = convert.clean(s("  a ", "", "   ", None, "NA"))
    assert cleaned.tolist() == ["a", None, None, None, "NA"]
    assert convert.blank_missing(cleaned, ["na", "-"]).tolist() == ["a", None, None, None, None]


def test_numbers() -> None:
    assert convert.canonical_integer(s("3", "3.0", "+4", "3,00", "3.5", "x")).tolist() == [
        "3",
        "3",
        "4",
        "3",
        "3.5",
        "x",
    ]
    assert convert.canonical_float(s("12,5", "12.5", "abc"), ",").tolist() == [
        "12.5",
        "12.5",
        "abc",
    ]


def test_enum_and_boolean() -> None:
    assert convert.canonical_enum(
        s("Male", "FEMALE", "h"), ["male", "female", "unknown"]
    ).tolist() == ["male", "female", "h"]
    assert convert.canonical_boolean(s("oui", "Nein", "1", "tak", "maybe")).tolist() == [
        "true",
        "false",
        "true",
        "true",
        "maybe",
    ]


def test_icdo3_normalisers() -> None:
    topo = convert.normalise(s("C421", "c42.1", "C 42.1", "X99", None), "icdo3_topography")
    assert topo.tolist() == ["C42.1", "C42.1", "C42.1", "X99", None]
    split = convert.split_morphology(s("9836/3", "98363", "M-8970/3", "9500", "abc", None))
    assert split["morphology"].tolist() == ["9836", "9836", "8970", "9500", "abc", None]
    assert split["behaviour"].tolist() == ["3", "3", "3", None, None, None]


def test_duo_normaliser() -> None:
    got = convert.normalise(s("DUO_0000042; DUO:0000006", "duo 0000007"), "duo")
    assert got.tolist() == ["DUO:0000042 DUO:0000006", "DUO:0000007"]

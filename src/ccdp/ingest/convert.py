"""Column-wise conversions from a site's text to the model's canonical text, vectorised.

Every function takes and returns an object Series of `str`/`None`. What cannot be converted is
passed through unchanged (raw), never dropped or blanked: the quality edits then quarantine the
row naming the field and the value the site actually sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from ccdp.ingest.specbase import StringLoader

EXCEL_SERIAL = "excel_serial"
# frame columns beside a date field: the source text read in one day/month order that the other
# order reads as another date (`<prefix><field>`), and that other date (`...__other`)
AMBIGUOUS_DATE_PREFIX = "_ambiguous_date__"
# frame column beside a date field: why a value read by none of the declared formats is no date
# (`31 February 2012 does not exist`), in words for the ingest's message
UNREAD_DATE_PREFIX = "_unread_date__"
# frame column beside a date field: the text the site wrote where the mapping read it as another
# text (03/05/2010 -> 2010-05-03), so a quarantine export shows every value as written
AS_WRITTEN_PREFIX = "_as_written__"
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_FORMAT_PARTS = {
    "%d": r"(?P<d>\d{1,2})",
    "%m": r"(?P<m>\d{1,2})",
    "%Y": r"(?P<Y>\d{4})",
    "%y": r"(?P<y>\d{2})",
}
ISO = "iso"
NAMED_DATE_FORMATS = (ISO, EXCEL_SERIAL)
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_EXCEL_MAX_SERIAL = 2_958_465  # 9999-12-31
_ISO_DAY = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?$")
_ISO_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_INTEGER = r"^[+-]?\d+(?:[.,]0*)?$"
_SERIAL = r"^\d+(?:\.\d+)?$"
# a format that starts with day then month, or month then day (%d/%m/%Y, %m-%d-%y ...)
_DAY_MONTH = re.compile(r"^%(?P<a>[dm])(?P<sep>[^%]*)%(?P<b>[dm])")

Normaliser = Literal[
    "icdo3_topography",
    "icdo3_morphology",
    "icdo3_behaviour",
    "iso3166_alpha2",
    "duo",
    "upper",
    "lower",
    "none",
]


def clean(series: pd.Series) -> pd.Series:
    """Text with surrounding whitespace stripped; empty text and NaN become None."""
    s = series.astype(object)
    missing = s.isna()
    text = s.where(missing, s.astype(str)).str.strip()
    return text.where(~missing & (text != ""), None).astype(object)


def _flag(mask: pd.Series) -> pd.Series:
    """A boolean mask from a string-method result that has NaN where the value was None."""
    return mask.astype("boolean").fillna(False).astype(bool)


def blank_missing(series: pd.Series, tokens: Iterable[str]) -> pd.Series:
    """Values written as a missing-value token (NA, -, 99 ...) become None (case-insensitive)."""
    folded = {t.strip().casefold() for t in tokens}
    if not folded:
        return series
    hit = _flag(series.str.casefold().isin(folded))
    return series.where(~hit, None)


def extract(series: pd.Series, pattern: str) -> pd.Series:
    """The first capture group of `pattern` where it matches; the raw value where it does not."""
    got = series.str.extract(pattern, expand=True).iloc[:, 0]
    return got.where(got.notna(), series).astype(object)


def map_values(series: pd.Series, mapping: Mapping[str, str | None]) -> tuple[pd.Series, pd.Series]:
    """Local codes to model codes (keys matched case-insensitively); also the unmapped mask.

    A key mapped to None (YAML `null`) is a declared missing value, not an unmapped one.
    """
    folded = {str(k).strip().casefold(): v for k, v in mapping.items()}
    keys = series.str.casefold()
    known = _flag(keys.isin(set(folded)))
    mapped = keys.map(folded).astype(object)
    out = series.where(~known, mapped)
    out = out.where(out.notna(), None)
    unmapped = series.notna() & ~known
    return out.astype(object), unmapped


def to_iso_dates(series: pd.Series, formats: Iterable[str], allow_month: bool) -> pd.Series:
    """Parse with each format in turn; ISO `YYYY-MM-DD` (or `YYYY-MM`) out, raw where none fits."""
    return read_dates(series, list(formats), allow_month)[0]


def read_dates(
    series: pd.Series, formats: list[str], allow_month: bool
) -> tuple[pd.Series, np.ndarray]:
    """`to_iso_dates`, and for each value the index of the format that read it (-1: none)."""
    out = series.copy().astype(object)
    read_by = np.full(len(series), -1, dtype=np.int64)
    todo = series.notna().to_numpy().copy()
    for i, fmt in enumerate(formats):
        if not todo.any():
            break
        idx = series.index[todo]
        parsed = parse_dates(series.loc[idx], fmt, allow_month)
        ok = parsed.notna().to_numpy()
        out.loc[idx[ok]] = parsed.to_numpy()[ok]
        read_by[np.flatnonzero(todo)[ok]] = i
        todo[np.flatnonzero(todo)[ok]] = False
    return out, read_by


def other_readings(
    series: pd.Series, dates: pd.Series, read_by: np.ndarray, formats: list[str]
) -> pd.Series:
    """Where a value read day first (or month first) is also a different date in the other
    order, that other date; None elsewhere. Unless other values read by the same format show
    its order (13-31 where the other order needs a month): then the reading stands."""
    other = pd.Series(None, index=series.index, dtype=object)
    for i, fmt in enumerate(formats):
        swapped = swapped_order(fmt)
        mine = read_by == i
        if swapped is None or not mine.any():
            continue
        idx = series.index[mine]
        alt = parse_dates(series.loc[idx], swapped, allow_month=False)
        if alt.isna().any():
            continue  # some value fits this order only: the data shows its order
        differs = (alt.to_numpy() != dates.loc[idx].to_numpy()) & alt.notna().to_numpy()
        other.loc[idx[differs]] = alt.to_numpy()[differs]
    return other.where(other.notna(), None)


def date_order(fmt: str) -> Literal["day first", "month first"] | None:
    """Whether a format reads the day or the month first (None when the order is not in
    question, e.g. ISO, %Y%m%d or %m/%Y): 03/04/2017 means two dates, one per order."""
    m = _DAY_MONTH.match(fmt)
    if m is None or m["a"] == m["b"]:
        return None
    return "day first" if m["a"] == "d" else "month first"


def swapped_order(fmt: str) -> str | None:
    """The same shape in the other day/month order (%d/%m/%Y -> %m/%d/%Y), or None."""
    m = _DAY_MONTH.match(fmt)
    if m is None or m["a"] == m["b"]:
        return None
    return f"%{m['b']}{m['sep']}%{m['a']}{fmt[m.end() :]}"


def parse_dates(values: pd.Series, fmt: str, allow_month: bool) -> pd.Series:
    """ISO text where `fmt` reads the value, None elsewhere."""
    if fmt == ISO:
        return _parse_iso(values, allow_month)
    if fmt == EXCEL_SERIAL:
        return _parse_excel_serial(values)
    stamps = pd.to_datetime(values, format=fmt, errors="coerce")
    if (width := _digits_width(fmt)) is not None:
        # pandas 3 reads 100234 by %Y%m%d as 1002-03-04: a digits-only format needs every digit
        stamps = stamps.where(_flag(values.str.fullmatch(rf"\d{{{width}}}")))
    month_only = "%d" not in fmt and "%j" not in fmt
    if month_only and not allow_month:
        return pd.Series(None, index=values.index, dtype=object)
    text = stamps.dt.strftime("%Y-%m" if month_only else "%Y-%m-%d")
    return text.where(stamps.notna(), None).astype(object)


def why_not_dates(values: pd.Series, formats: list[str]) -> pd.Series:
    """For each value (read by none of `formats`), why it is not a date, in the words a data
    manager checks against her source: 'is not a date: 31 February 2012 does not exist (declared
    date format %d/%m/%Y)', or 'is not a date in the declared date format %d/%m/%Y'."""
    shown = ", ".join("YYYY-MM-DD" if f == ISO else f for f in formats)
    declared = f"declared date format{'s' if len(formats) > 1 else ''} {shown}"
    out: list[str | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        reason = next((r for f in formats if (r := _impossible(str(value), f))), None)
        out.append(
            f"is not a date: {reason} ({declared})"
            if reason
            else f"is not a date in the {declared}"
        )
    return pd.Series(out, index=values.index, dtype=object)


def _impossible(value: str, fmt: str) -> str | None:
    """The value has the shape of `fmt` but names no real day: why ('month 13 does not exist')."""
    pattern = "(?P<Y>\\d{4})-(?P<m>\\d{1,2})-(?P<d>\\d{1,2})" if fmt == ISO else None
    if pattern is None:
        parts = re.split(r"(%[dmYy])", fmt)
        if not set(parts[1::2]) >= {"%d", "%m"} or len(set(parts[1::2])) != len(parts[1::2]):
            return None
        pattern = "".join(_FORMAT_PARTS.get(p, re.escape(p)) for p in parts)
    m = re.fullmatch(pattern, value.strip())
    if m is None:
        return None
    got = m.groupdict()
    year = int(got["Y"]) if got.get("Y") else 2000 + int(got["y"])
    month, day = int(got["m"]), int(got["d"])
    if not 1 <= month <= 12:
        return f"month {month} does not exist"
    last = (pd.Timestamp(year=year, month=month, day=1) + pd.offsets.MonthEnd(0)).day
    if not 1 <= day <= last:
        return f"{day} {_MONTHS[month - 1]} {year} does not exist"
    return None


def _digits_width(fmt: str) -> int | None:
    """How many digits a separator-less numeric format reads (%Y%m%d: 8), else None."""
    if re.fullmatch(r"(?:%[Ymdy])+", fmt) is None:
        return None
    return sum(4 if part == "Y" else 2 for part in fmt[1::2])


def _parse_iso(values: pd.Series, allow_month: bool) -> pd.Series:
    parts = values.str.extract(_ISO_DAY)
    joined = parts[0] + "-" + parts[1].str.zfill(2) + "-" + parts[2].str.zfill(2)
    stamps = pd.to_datetime(joined, format="%Y-%m-%d", errors="coerce")
    out = stamps.dt.strftime("%Y-%m-%d").where(stamps.notna(), None).astype(object)
    if allow_month:
        month = values.str.extract(_ISO_MONTH)
        joined_m = month[0] + "-" + month[1].str.zfill(2)
        mstamps = pd.to_datetime(joined_m, format="%Y-%m", errors="coerce")
        mtext = mstamps.dt.strftime("%Y-%m").where(mstamps.notna(), None)
        out = out.where(out.notna(), mtext)
    return out.astype(object)


def _parse_excel_serial(values: pd.Series) -> pd.Series:
    numeric = _flag(values.str.fullmatch(_SERIAL))
    days = pd.to_numeric(values.where(numeric), errors="coerce")
    days = days.where((days >= 1) & (days <= _EXCEL_MAX_SERIAL))
    stamps = _EXCEL_EPOCH + pd.to_timedelta(np.floor(days), unit="D")
    return stamps.dt.strftime("%Y-%m-%d").where(days.notna(), None).astype(object)


def canonical_integer(series: pd.Series) -> pd.Series:
    """'3', '3.0', '3,00' -> '3'; anything else raw."""
    is_int = _flag(series.str.fullmatch(_INTEGER))
    trimmed = series.str.replace(r"[.,]0*$", "", regex=True).str.lstrip("+")
    return series.where(~is_int, trimmed).astype(object)


def canonical_float(series: pd.Series, decimal: str) -> pd.Series:
    """Decimal comma to point when the source declares `decimal: ','`; anything else raw."""
    if decimal == ".":
        return series
    pattern = rf"^[+-]?\d*{re.escape(decimal)}\d+$"
    hit = _flag(series.str.fullmatch(pattern))
    return series.where(~hit, series.str.replace(decimal, ".", regex=False)).astype(object)


def canonical_enum(series: pd.Series, allowed: Iterable[object]) -> pd.Series:
    """Case-insensitive match to an allowed value gives its canonical spelling; else raw."""
    lookup = {str(a).casefold(): str(a) for a in allowed}
    mapped = series.str.casefold().map(lookup)
    return series.where(mapped.isna(), mapped).astype(object)


def canonical_boolean(series: pd.Series) -> pd.Series:
    """yes/no, oui/non, ja/nein, 1/0 ... -> 'true'/'false' (words from data/synonyms.yaml)."""
    words = value_synonyms()["boolean"]
    lookup = {w.casefold(): canon for canon, ws in words.items() for w in [canon, *ws]}
    mapped = series.str.casefold().map(lookup)
    return series.where(mapped.isna(), mapped).astype(object)


def normalise(series: pd.Series, how: str) -> pd.Series:
    """Apply a named code normaliser; values it cannot read stay raw."""
    if how in ("none", "icdo3_morphology", "icdo3_behaviour"):
        return series if how == "none" else _morphology_part(series, how)
    if how == "icdo3_topography":
        from ccdp.terminology.icdo3 import normalise_topography

        got = normalise_topography(series)
        return _raw_where_failed(series, got)
    if how in ("upper", "iso3166_alpha2"):
        return series.str.upper().astype(object)
    if how == "lower":
        return series.str.lower().astype(object)
    if how == "duo":
        return _normalise_duo(series)
    raise ValueError(f"unknown normaliser {how!r}")


def split_morphology(series: pd.Series) -> pd.DataFrame:
    """`9836/3`, `98363`, `M-9836/3` -> morphology '9836' and behaviour '3' (raw if unreadable)."""
    from ccdp.terminology.icdo3 import normalise_morphology

    got = normalise_morphology(series)
    morph = _raw_where_failed(series, got["morphology"].reindex(series.index))
    behaviour = got["behaviour"].reindex(series.index)
    behaviour = behaviour.where(behaviour.notna(), None).astype(object)
    return pd.DataFrame({"morphology": morph, "behaviour": _texts(behaviour)})


def _morphology_part(series: pd.Series, how: str) -> pd.Series:
    split = split_morphology(series)
    return split["morphology" if how == "icdo3_morphology" else "behaviour"]


def _raw_where_failed(raw: pd.Series, got: pd.Series) -> pd.Series:
    got = pd.Series(got, index=raw.index).astype(object)
    good = got.notna() & (got.astype(str) != "")
    return _texts(got.where(good, raw))


def _texts(series: pd.Series) -> pd.Series:
    """Each value as text, None where missing, in an object Series: `map` alone would infer
    pandas 3's string dtype, which holds NaN for None."""
    out = series.map(_text).astype(object)
    return out.where(out.notna(), None)


def _text(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _normalise_duo(series: pd.Series) -> pd.Series:
    spaced = series.str.replace(r"[,;|\s]+", " ", regex=True).str.strip()
    return spaced.str.replace(r"(?i)\bDUO[_:\s-]?(\d{7})\b", r"DUO:\1", regex=True).astype(object)


@cache
def value_synonyms() -> dict[str, dict[str, list[str]]]:
    """Value words per kind (boolean, sex, vital_status...) from data/synonyms.yaml."""
    text = resources.files("ccdp.ingest").joinpath("data/synonyms.yaml").read_text("utf-8")
    raw = yaml.load(text, Loader=StringLoader)
    return {
        kind: {str(k): [str(w) for w in ws] for k, ws in v.items()}
        for kind, v in raw["values"].items()
    }

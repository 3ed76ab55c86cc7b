"""Identifiers made comparable before they are encoded: the same child keyed in Warsaw, Berlin and
Paris must give the same tokens, or the encodings of the two records cannot agree.

Names: case folded, accents dropped (NFKD), letters without a decomposition (ß, ł, ø, æ, ...)
transliterated from `data/transliteration.csv`, everything but a-z removed (hyphens, spaces,
apostrophes: Jean-Pierre, D'Angelo, Ng'ang'a), then the German umlaut spellings folded (ae, oe,
ue -> a, o, u) so that Müller (-> muller) and Mueller (-> muller) agree. The folding is applied to
every name on both sides, so it never separates two spellings of one name; it only merges a few
unrelated ones (Michael, Michal), which the other fields tell apart.

Every function works on the distinct values of a column and maps back (`pd.factorize`), so a
registry of 100,000 children normalises a few thousand names, not 100,000.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

_NOT_LETTER = re.compile(r"[^a-z]")
_UMLAUT_SPELLING = re.compile(r"(?<=[a-z])([aou])e")
_NOT_DIGIT = re.compile(r"[^0-9]")

SEX_CODES: dict[str, str] = {
    **dict.fromkeys(("m", "male", "1", "h", "homme", "man", "boy", "masculino", "maschio"), "m"),
    **dict.fromkeys(
        ("f", "female", "2", "k", "w", "femme", "woman", "girl", "feminino", "femmina", "weiblich"),
        "f",
    ),
}


@cache
def _special_letters() -> dict[int, str]:
    """The transliteration table: code point -> ASCII spelling."""
    text = resources.files("ccdp.linkage").joinpath("data/transliteration.csv").read_text("utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {ord(r["char"]): r["ascii"] for r in rows}


def name(text: object) -> str:
    """One name as the letters a-z only, spelled the same whichever registry keyed it."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = str(text).translate(_special_letters())
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    s = _NOT_LETTER.sub("", s.lower().translate(_special_letters()))
    return _UMLAUT_SPELLING.sub(r"\1", s)


def names(values: pd.Series) -> np.ndarray:
    """`name` over a column, computed once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    clean = np.array([name(u) for u in uniques] + [""], dtype=object)
    return clean[codes]  # the sentinel -1 picks the trailing ""


def text(values: pd.Series) -> np.ndarray:
    """Free text (an address, a town): lower case a-z and 0-9 only, accents dropped."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = []
    for u in uniques:
        s = str(u).translate(_special_letters())
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
        out.append(re.sub(r"[^a-z0-9]", "", s.lower()))
    return np.array([*out, ""], dtype=object)[codes]


def digits(values: pd.Series) -> np.ndarray:
    """An identifier number (national id, postcode): its digits and letters, upper case, no
    separators (123.456.789-09 -> 12345678909)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = [re.sub(r"[^0-9A-Z]", "", str(u).upper()) for u in uniques]
    return np.array([*out, ""], dtype=object)[codes]


def sex(values: pd.Series) -> np.ndarray:
    """'m', 'f' or '' (unknown) from the codes registries write (male, M, H, 1, female, F, K, 2)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = [SEX_CODES.get(str(u).strip().lower(), "") for u in uniques]
    return np.array([*out, ""], dtype=object)[codes]


def birth_date(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) as int arrays, 0 where unknown. Reads ISO dates, `YYYY-MM` (a withheld
    day), `YYYYMMDD` and dates or timestamps; an impossible part reads as unknown."""
    if pd.api.types.is_datetime64_any_dtype(values):
        d = pd.to_datetime(values)
        y, m, dd = (
            part.fillna(0).to_numpy(dtype=np.int64) for part in (d.dt.year, d.dt.month, d.dt.day)
        )
        return y, m, dd
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    parts = np.zeros((len(uniques) + 1, 3), dtype=np.int64)
    for k, u in enumerate(uniques):
        parts[k] = _ymd(str(u))
    out = parts[codes]
    return out[:, 0], out[:, 1], out[:, 2]


def _ymd(value: str) -> tuple[int, int, int]:
    """One date string's parts; unknown parts 0."""
    s = _NOT_DIGIT.sub("", value.strip()[:10])
    y = int(s[:4]) if len(s) >= 4 else 0
    m = int(s[4:6]) if len(s) >= 6 else 0
    d = int(s[6:8]) if len(s) >= 8 else 0
    if not 1800 <= y <= 2200:
        return 0, 0, 0
    return y, m if 1 <= m <= 12 else 0, d if 1 <= d <= 31 else 0

"""An independent reading of the SEER ICCC recode tables, for tests only.

It parses the tables in the layout SEER publishes them (tests/terminology/data/seer_iccc_*.txt:
site group | histology | site | behaviour | extended recode), derives main group, subgroup and the
3-digit recode from the table's own hierarchy (roman numeral, letter, division), and classifies one
tumour at a time by trying the rows top to bottom. It shares no code or data with ccdp.terminology.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
FILES = {"2017": "seer_iccc_iarc2017.txt", "who2008": "seer_iccc_who2008.txt"}
ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]


@dataclass(frozen=True)
class Row:
    histologies: frozenset[int]
    sites: tuple[tuple[int, int], ...]
    behaviours: frozenset[int]
    group: str
    subgroup: str
    recode: str
    extended: str


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def _site(text: str) -> int:
    return int(text.strip().lstrip("C"))


def _sites(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.append((_site(a), _site(b or a)))
    return tuple(out)


def load(edition: str) -> list[Row]:
    rows: list[Row] = []
    group = letter = ""
    for line in (DATA / FILES[edition]).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, hist, site, beh, ext = ([*line.split("|"), "", "", "", ""])[:5]
        label = label.strip()
        roman = re.match(r"^([IVX]+) ", label)
        if roman:
            group, letter = roman.group(1), ""
        sub = re.match(r"^\(([a-z])[).]", label)
        if sub:
            letter = sub.group(1)
        if not ext.strip():
            continue
        number = ROMAN.index(group) + 1
        recode = f"{number:02d}{ord(letter) - 96 if letter else 0}"
        rows.append(
            Row(
                histologies=frozenset(_ints(hist)),
                sites=_sites(site),
                behaviours=frozenset(_ints(beh)),
                group=group,
                subgroup=group + letter,
                recode=recode,
                extended=ext.strip(),
            )
        )
    return rows


def classify(rows: list[Row], histology: int, site: int, behaviour: int) -> Row | None:
    """First row whose histology, site and behaviour all match; None = unclassified (999)."""
    for row in rows:
        if (
            histology in row.histologies
            and behaviour in row.behaviours
            and any(lo <= site <= hi for lo, hi in row.sites)
        ):
            return row
    return None

"""`ccdp map suggest`: draft a mapping spec from a site's export, marking what to check.

A data manager should edit a draft, not write YAML from nothing. We read every table-like thing
in SOURCE (CSV files, xlsx sheets, REDCap instruments, FHIR resource types), profile each
column (its name in seven languages, and what its values look like: dates and their format,
ICD-O codes, sex and vital-status words, ISO countries, DUO codes, numbers, identifiers), score
every column against every model field, assign columns to fields per table (Hungarian
assignment on the scores) and each source to the model table it fits best. Value maps and date
formats are proposed from the values seen; anything uncertain carries a confidence and a
`# check:` comment in the YAML.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import linear_sum_assignment

from ccdp.ingest import convert
from ccdp.ingest.readers import ReaderError, ReaderOptions, detect_format, read_table
from ccdp.ingest.specbase import StringLoader
from ccdp.model import load_model
from ccdp.model.schema import FieldDef, TableDef

MIN_SCORE = 0.45  # below this a column is not proposed for a field
CHECK_BELOW = 0.75  # below this the field gets a confidence and a `# check:` comment
SAMPLE_VALUES = 300
DATE_FORMATS = (
    "iso",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%Y/%m/%d",
    "%Y%m%d",
    "%d/%m/%y",
    "%m/%d/%y",
    "%d.%m.%y",
    "%m/%Y",
    "%m.%Y",
)
TEXT_MISSING = (
    "NA",
    "N/A",
    "n/a",
    "na",
    "ND",
    "NK",
    "-",
    "--",
    ".",
    "?",
    "NULL",
    "null",
    "None",
    "nan",
    "missing",
    "#N/A",
)
NUMERIC_MISSING = ("9", "99", "999", "9999", "-1", "-9", "-99", "-999")
_SERIAL_RANGE = (18000, 60000)  # Excel serials for 1949-2064
# Years a registry's dates fall in (its date edits reject earlier ones, and later than today):
# a format whose readings fall outside is not how this column writes dates (100234 is no date in
# 1002). The upper bound is the current year.
FIRST_YEAR = 1900
# Value kinds that identify one field by their values alone.
_VALUE_KINDS = (
    "sex",
    "vital_status",
    "cause_of_death",
    "laterality",
    "relapse_site",
    "event_type",
    "treatment.type",
    "immunophenotype",
    "cns_status",
    "stage_system",
    "risk_group",
    "specimen.type",
    "biomarker.value",
    "population.age_group",
)
# Kinds whose values alone say which field a column is.
_SELF_EVIDENT = (
    "topography",
    "morphology",
    "sex",
    "vital_status",
    "duo",
    "relapse_site",
    "event_type",
    "treatment.type",
    "laterality",
)
_DATA_SUFFIXES = {".csv", ".tsv", ".txt", ".tab", ".xlsx", ".xlsm", ".json", ".ndjson"}
_KEY_FIELDS = {"patient_id", "tumour_id", "event_id", "treatment_id", "specimen_id"}


# ---------------------------------------------------------------------------- vocabulary


def norm_name(name: str) -> str:
    """Lower-case, accents removed, any run of non-alphanumerics -> '_'."""
    text = name.strip().lower()
    for a, b in (("ł", "l"), ("ø", "o"), ("ß", "ss"), ("æ", "ae"), ("œ", "oe")):
        text = text.replace(a, b)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


@cache
def _vocabulary() -> dict:
    text = resources.files("ccdp.ingest").joinpath("data/synonyms.yaml").read_text("utf-8")
    return yaml.load(text, Loader=StringLoader)


@cache
def field_synonyms(table: str, field_name: str) -> frozenset[str]:
    """Normalised names a site may use for `table.field` (specific list, else generic)."""
    fields = _vocabulary()["fields"]
    langs = fields.get(f"{table}.{field_name}") or fields.get(field_name) or {}
    names = {norm_name(field_name)}
    for words in langs.values():
        names.update(norm_name(str(w)) for w in words)
    return frozenset(n for n in names if n)


@cache
def table_synonyms(table: str) -> frozenset[str]:
    words = _vocabulary()["tables"].get(table, [])
    return frozenset({norm_name(table), *(norm_name(str(w)) for w in words)})


@cache
def value_words(kind: str) -> dict[str, str]:
    """casefolded/normalised word -> canonical value, for one value kind (sex, vital_status...)."""
    out: dict[str, str] = {}
    for canon, words in convert.value_synonyms().get(kind, {}).items():
        for w in [canon, *words]:
            out[str(w).casefold()] = canon
            out[norm_name(str(w))] = canon
    return out


def name_score(column: str, synonyms: frozenset[str]) -> float:
    """1 for a known name, less for a name containing one, or spelled nearly like one."""
    n = norm_name(column)
    if not n:
        return 0.0
    if n in synonyms:
        return 1.0
    tokens = n.split("_")
    best = 0.0
    for syn in synonyms:
        st = syn.split("_")
        if len(st) > 1 and sorted(st) == sorted(tokens):
            best = max(best, 0.95)
        if len(st) < len(tokens) and _contains(tokens, st) and len(syn) >= 3:
            best = max(best, 0.85 - 0.05 * (len(tokens) - len(st)))
        ratio = difflib.SequenceMatcher(None, n, syn).ratio()
        if ratio >= 0.85:
            best = max(best, ratio * 0.85)
    return best


def _contains(tokens: list[str], sub: list[str]) -> bool:
    k = len(sub)
    return any(tokens[i : i + k] == sub for i in range(len(tokens) - k + 1))


# ---------------------------------------------------------------------------- sources


@dataclass
class Candidate:
    """One table-like part of the export (file, sheet, REDCap instrument, FHIR resource)."""

    name: str
    file: str
    label: str
    frame: pd.DataFrame
    options: dict[str, object] = field(default_factory=dict)
    where: list[dict[str, object]] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    date_order: list[str] = field(default_factory=list)
    # day/month formats the data cannot decide between: profiled, never proposed; why, in words
    undecided: list[str] = field(default_factory=list)
    date_question: str = ""
    day_month: str = ""  # 'day first', 'month first', 'mixed', 'unknown' or '' (no such dates)
    unpivot: dict[str, list[str]] | None = None  # long column -> wide columns, one per item
    choices: dict[str, dict[str, str]] = field(default_factory=dict)  # REDCap codes -> labels
    # the export's key: (column, found by its name) - see `detect_key`
    key: tuple[str, bool] | None = None

    def signature(self) -> tuple:
        """Same file, reader options and filter = same source entry in the spec."""
        return (self.file, tuple(sorted(self.options.items())), repr(self.where))


@dataclass
class Profile:
    """What a column's values look like."""

    column: str
    counts: pd.Series  # value -> count, non-missing values after cleaning
    n: int
    unique_ratio: float
    kinds: dict[str, float]
    date_formats: list[str]
    date_share: float
    missing: list[str]


def find_candidates(source: Path) -> list[Candidate]:
    """Every readable table-like part of SOURCE (a folder or one file)."""
    root = source if source.is_dir() else source.parent
    paths = (
        [source]
        if source.is_file()
        else sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    )
    paths = [
        p
        for p in paths
        if p.suffix.lower() in _DATA_SUFFIXES and not p.name.lower().startswith("readme")
    ]
    dictionaries = {p: d for p in paths if (d := read_redcap_dictionary(p)) is not None}
    out: list[Candidate] = []
    for path in paths:
        if path in dictionaries:
            continue
        rel = path.relative_to(root).as_posix()
        dictionary = next((d for p, d in dictionaries.items() if p.parent == path.parent), None)
        try:
            found = _candidates_of(path, rel, dictionary)
        except ReaderError:
            continue
        out.extend(found)
        out.extend(w for c in found if (w := _wide_candidate(c)) is not None)
    return out


def _drop_wide_columns(cands: list[Candidate]) -> None:
    """Once a long form exists, its numbered columns are offered only through it."""
    longs = {c.signature(): c for c in cands if c.unpivot}
    for cand in cands:
        long = longs.get(cand.signature())
        if long is None or cand is long or long.unpivot is None:
            continue
        wide = {col for cols in long.unpivot.values() for col in cols}
        cand.profiles = {k: v for k, v in cand.profiles.items() if k not in wide}


def wide_groups(columns: list[str]) -> dict[str, list[str]]:
    """Numbered column families (relapse1_date, relapse2_date ...) sharing the most items.

    Returns long column name -> the wide columns in item order, e.g.
    {'relapse_date': ['relapse1_date', 'relapse2_date'], 'relapse_site': [...]}.
    """
    groups: dict[str, dict[int, str]] = {}
    for col in columns:
        runs = list(re.finditer(r"\d+", col))
        if len(runs) != 1 or col.startswith("_"):
            continue
        run = runs[0]
        key = col[: run.start()] + "#" + col[run.end() :]
        groups.setdefault(key, {})[int(run.group())] = col
    families: dict[tuple[int, ...], dict[str, list[str]]] = {}
    for key, items in groups.items():
        nums = tuple(sorted(items))
        if len(nums) >= 2 and nums == tuple(range(nums[0], nums[0] + len(nums))):
            families.setdefault(nums, {})[key] = [items[n] for n in nums]
    if not families:
        return {}
    best = max(families.values(), key=lambda f: (len(f), len(next(iter(f.values())))))
    out: dict[str, list[str]] = {}
    for key, cols in best.items():
        name = re.sub(r"_+", "_", key.replace("#", "_")).strip("_")
        while name in columns or name in out:
            name += "_long"
        out[name] = cols
    return out


def _wide_candidate(cand: Candidate) -> Candidate | None:
    """The long form of a candidate with numbered column families (one row per item)."""
    families = wide_groups([c for c in cand.frame.columns if not c.startswith("_")])
    if not families:
        return None
    frame = cand.frame
    wide = {c for cols in families.values() for c in cols}
    base = frame.drop(columns=list(wide))
    items = len(next(iter(families.values())))
    pieces = []
    for i in range(items):
        piece = base.copy()
        for name, cols in families.items():
            piece[name] = convert.blank_missing(convert.clean(frame[cols[i]]), TEXT_MISSING)
        piece["_item"] = str(i + 1)
        pieces.append(piece[piece[list(families)].notna().any(axis=1)])
    long = pd.concat(pieces, ignore_index=True)
    return Candidate(
        f"{cand.name} (long)",
        cand.file,
        cand.label,
        long,
        dict(cand.options),
        list(cand.where),
        unpivot=families,
    )


@dataclass
class RedcapDictionary:
    """A REDCap data dictionary: the fields of each form and the coded choices of each field."""

    forms: dict[str, list[str]]
    choices: dict[str, dict[str, str]]


def read_redcap_dictionary(path: Path) -> RedcapDictionary | None:
    """Parse a REDCap data dictionary CSV; None if `path` is not one."""
    if path.suffix.lower() != ".csv":
        return None
    try:
        frame = read_table(path, ReaderOptions(format="csv"))
    except ReaderError:
        return None
    cols = {norm_name(c): c for c in frame.columns}
    var, form = cols.get("variable_field_name"), cols.get("form_name")
    choice = cols.get("choices_calculations_or_slider_labels")
    if var is None or form is None:
        return None
    forms: dict[str, list[str]] = {}
    choices: dict[str, dict[str, str]] = {}
    for row in frame.itertuples(index=False):
        values = dict(zip(frame.columns, row, strict=True))
        name, form_name = values[var], values[form]
        if not name or not form_name:
            continue
        forms.setdefault(str(form_name), []).append(str(name))
        text = values.get(choice) if choice else None
        if text and "," in str(text):
            pairs = [c.split(",", 1) for c in str(text).split("|")]
            if all(len(p) == 2 for p in pairs):
                choices[str(name)] = {p[0].strip(): p[1].strip() for p in pairs}
    return RedcapDictionary(forms, choices)


def _candidates_of(
    path: Path, rel: str, dictionary: RedcapDictionary | None = None
) -> list[Candidate]:
    fmt = detect_format(path)
    if fmt == "xlsx":
        from ccdp.ingest.readers.excel import sheet_names

        return [
            Candidate(f"{rel}[{s}]", rel, s, read_table(path, ReaderOptions(sheet=s)), {"sheet": s})
            for s in sheet_names(path)
        ]
    if fmt == "fhir":
        from ccdp.ingest.readers.fhir import read_fhir_resources

        return [
            Candidate(f"{rel}[{kind}]", rel, kind, frame, {"resource": kind})
            for kind, frame in read_fhir_resources(path).items()
        ]
    frame = read_table(path)
    if fmt == "redcap":
        return _redcap_candidates(path, rel, frame, dictionary)
    return [Candidate(rel, rel, Path(rel).stem, frame)]


def _redcap_candidates(
    path: Path, rel: str, frame: pd.DataFrame, dictionary: RedcapDictionary | None
) -> list[Candidate]:
    """Base rows, and each repeating instrument with its own fields plus the record's keys.

    With a data dictionary, coded values are read through their labels, and a repeating form
    with no rows in this export still becomes a (column-names-only) candidate.
    """
    from ccdp.ingest.readers.redcap import INSTRUMENT, instruments

    raw = read_table(path, ReaderOptions(format="redcap", inherit=False))
    record = next(c for c in frame.columns if not c.startswith("_"))
    choices = dictionary.choices if dictionary else {}
    out = []
    seen: set[str] = set()
    for inst in instruments(frame):
        if inst is None:
            rows = frame[INSTRUMENT].isna() if INSTRUMENT in frame else pd.Series(True, frame.index)
            cond = [{"column": INSTRUMENT, "missing": True}] if INSTRUMENT in frame else []
            part = frame[rows.to_numpy()].dropna(axis=1, how="all")
            label = "base"
        else:
            rows = (frame[INSTRUMENT] == inst).to_numpy()
            cond = [{"column": INSTRUMENT, "equals": inst}]
            own = set(raw[rows].dropna(axis=1, how="all").columns)
            if dictionary and inst in dictionary.forms:
                own |= set(dictionary.forms[inst])
            keep = [
                c
                for c in frame.columns
                if c in own or c == record or _key_like(c) or c.startswith("_")
            ]
            part = frame.loc[rows, keep]
            label = inst
            seen.add(inst)
        out.append(
            Candidate(
                f"{rel} ({label})",
                rel,
                label,
                part.reset_index(drop=True),
                {},
                cond,
                choices=choices,
            )
        )
    base_filled = set(out[0].frame.columns) if out else set()
    for form, fields in dictionary.forms.items() if dictionary else []:
        if form in seen or any(f in base_filled for f in fields if f != record):
            continue
        cols = [record, *[f for f in fields if f != record]]
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
        out.append(
            Candidate(
                f"{rel} ({form})",
                rel,
                form,
                empty,
                {},
                [{"column": INSTRUMENT, "equals": form}],
                choices=choices,
            )
        )
    return out


def _key_like(column: str) -> bool:
    tokens = norm_name(column).split("_")
    return "id" in tokens and len(tokens) <= 3


# ---------------------------------------------------------------------------- profiling


def profile(cand: Candidate, borrow: tuple[str, str] | None = None) -> None:
    """Fill `cand.profiles`; the day/month order is decided once per source, from all columns
    (or, when its values fit both orders, `borrow`: the order the export's other files show,
    and which files)."""
    cleaned = {c: convert.clean(cand.frame[c]) for c in cand.frame.columns if not c.startswith("_")}
    for col, codes in cand.choices.items():
        if col in cleaned:  # read coded values through their labels (1 -> male)
            cleaned[col] = cleaned[col].map(lambda v, c=codes: c.get(v, v) if v else v)
    counts = {c: s.value_counts() for c, s in cleaned.items()}
    order = _date_order(counts)
    order, cand.undecided, cand.date_question, cand.day_month = _day_month(order, counts, borrow)
    cand.date_order = order
    for col, s in cleaned.items():
        cand.profiles[col] = _profile_column(
            col, counts[col], int(s.notna().sum()), cand.date_order
        )
    cand.key = detect_key(cand)


@cache
def key_names() -> frozenset[str]:
    """Names of identifiers and hospital record numbers, in every language of the vocabulary."""
    names: set[str] = set()
    for key in _KEY_FIELDS:
        names |= field_synonyms("", key)
    return frozenset(names)


def detect_key(cand: Candidate) -> tuple[str, bool] | None:
    """The export's key, whatever its length: the first unique, never-empty column named like an
    id or record number (True), else the first unique, never-empty column whose values look like
    codes (no dates, names, vocabulary words or spaces) (False); None if there is none."""
    rows = len(cand.frame)
    unique = [
        c for c, p in cand.profiles.items() if rows > 1 and p.n == rows and len(p.counts) == rows
    ]
    named = key_names()
    for col in unique:
        if name_score(col, named) >= 0.8:
            return col, True
    people = field_synonyms("_identifier", "given_name") | field_synonyms(
        "_identifier", "family_name"
    )
    for col in unique:
        prof = cand.profiles[col]
        words = max((v for k, v in prof.kinds.items() if k in _VALUE_KINDS), default=0.0)
        spaced = prof.counts.index.astype(str).str.contains(r"\s").any()
        if prof.date_share < 0.5 and words < 0.5 and not spaced and name_score(col, people) < 0.8:
            return col, False
    return None


def _sample(counts: pd.Series) -> pd.Series:
    return counts.head(SAMPLE_VALUES)


def _share(counts: pd.Series, mask: pd.Series | np.ndarray) -> float:
    total = counts.sum()
    return float(counts[np.asarray(mask, dtype=bool)].sum() / total) if total else 0.0


def plausible_dates(values: pd.Series, fmt: str, allow_month: bool) -> pd.Series:
    """`convert.parse_dates`, keeping only readings in FIRST_YEAR..this year."""
    parsed = convert.parse_dates(values, fmt, allow_month)
    years = pd.to_numeric(parsed.str[:4], errors="coerce")
    ok = (years >= FIRST_YEAR) & (years <= date.today().year)
    return parsed.where(ok.to_numpy(), None).astype(object)


def bare_number(fmt: str) -> bool:
    """A date format whose values are plain digits (%Y%m%d, Excel serials): record numbers
    read by it too, so only a column named like a date is read by it."""
    return fmt == convert.EXCEL_SERIAL or re.fullmatch(r"(?:%[Ymdy])+", fmt) is not None


@cache
def _date_words() -> frozenset[str]:
    return frozenset(norm_name(str(w)) for w in _vocabulary()["date_words"])


@cache
def _date_field_names() -> frozenset[str]:
    """Every name of every date field of the model (dob, ddn, gebdat, fecha_diagnostico ...)."""
    names: set[str] = set()
    for tdef in load_model().tables.values():
        for fdef in tdef.input_fields:
            if fdef.type in ("date", "partial_date"):
                names |= field_synonyms(tdef.name, fdef.name)
    return frozenset(names)


@cache
def date_named(column: str) -> bool:
    """The column's name says it holds dates: a date field's name, a date word as a part, or
    inside one word of 4+ letters (`geburtsdatum`)."""
    if norm_name(column) in _date_field_names():
        return True
    tokens = norm_name(column).split("_")
    words = _date_words()
    return any(t in words or any(len(w) >= 4 and w in t for w in words) for t in tokens)


def _date_order(counts: dict[str, pd.Series]) -> list[str]:
    """Date formats ranked by how many of the source's date-like values each reads."""
    scores = {}
    for fmt in DATE_FORMATS:
        hits = 0
        for col, c in counts.items():
            sample = _sample(c)
            if sample.empty or (bare_number(fmt) and not date_named(col)):
                continue
            values = pd.Series(sample.index.astype(str), dtype=object)
            ok = plausible_dates(values, fmt, allow_month=True).notna().to_numpy()
            hits += int(sample.to_numpy()[ok].sum())
        scores[fmt] = hits
    return [f for f in sorted(scores, key=lambda f: -scores[f]) if scores[f] > 0]


def _day_month(
    order: list[str], counts: dict[str, pd.Series], borrow: tuple[str, str] | None = None
) -> tuple[list[str], list[str], str, str]:
    """Decide the site's day/month order from its values, never propose both orders of a shape.

    A value with 13-31 first can only be day first (25/03/2017), second only month first
    (03/25/2017). One kind seen: the other order's formats go. Both seen, or neither (every value
    fits both, like 03/04/2017): the formats left undecided and the question for the draft.
    Returns (order, undecided, note, verdict).
    """
    pairs = [(f, o) for f in order if (o := convert.swapped_order(f)) in order]
    if not pairs:
        return order, [], "", ""
    only: dict[str, list[tuple[int, str]]] = {"day first": [], "month first": []}
    for c in counts.values():
        sample = _sample(c)
        if sample.empty:
            continue
        values = pd.Series(sample.index.astype(str), dtype=object)
        for fmt, other in pairs:
            ok = convert.parse_dates(values, fmt, allow_month=False).notna().to_numpy()
            ok_other = convert.parse_dates(values, other, allow_month=False).notna().to_numpy()
            hits = ok & ~ok_other
            if hits.any():
                only[str(convert.date_order(fmt))].append(
                    (int(sample.to_numpy()[hits].sum()), str(values[hits].iloc[0]))
                )
    day = sum(n for n, _ in only["day first"])
    month = sum(n for n, _ in only["month first"])
    if bool(day) != bool(month):
        losing = "month first" if day else "day first"
        verdict = "day first" if day else "month first"
        return [f for f in order if convert.date_order(f) != losing], [], "", verdict
    if not day and borrow is not None:
        kept, files = borrow
        note = f"every value here fits both day/month orders; {kept} as in {files}"
        return [f for f in order if convert.date_order(f) in (kept, None)], [], note, "unknown"
    undecided = sorted({f for pair in pairs for f in pair}, key=order.index)
    shown = " or ".join(repr(f) for f in undecided)
    if day and month:
        question = (
            f"TODO the data mixes day/month orders: {day} value(s) only day first (e.g. "
            f"{only['day first'][0][1]}), {month} only month first (e.g. "
            f"{only['month first'][0][1]}); ask the site which order each file or period uses "
            f"and give one of {shown}"
        )
    else:
        question = (
            "TODO day/month order unknown: every value fits both orders (03/04/2017 is 3 April "
            f"or 4 March) and none has 13-31 in either place; ask the site, then give {shown}"
        )
    return order, undecided, question, "mixed" if day else "unknown"


def _profile_all(cands: list[Candidate]) -> None:
    """Profile every part; one whose dates fit both orders takes the order the export's other
    files show, when they all agree (a site writes dates one way) and none mixes orders."""
    for cand in cands:
        profile(cand)
    verdicts = {c.day_month for c in cands}
    decided = verdicts & {"day first", "month first"}
    if "unknown" not in verdicts or "mixed" in verdicts or len(decided) != 1:
        return
    (kept,) = decided
    files = ", ".join(sorted({c.file for c in cands if c.day_month == kept})[:3])
    for cand in cands:
        if cand.day_month == "unknown":
            cand.profiles = {}
            profile(cand, (kept, files))


def _profile_column(col: str, counts: pd.Series, n: int, order: list[str]) -> Profile:
    sample = _sample(counts)
    values = pd.Series(sample.index.astype(str), dtype=object)
    kinds: dict[str, float] = {}
    if not values.empty:
        folded = values.str.casefold()
        normed = values.map(norm_name)
        kinds["topography"] = _share(
            sample, values.str.fullmatch(r"[Cc]\s?\d{2}\.?\d").fillna(False)
        )
        kinds["morphology"] = _share(
            sample, values.str.fullmatch(r"(?:[Mm]-?)?[89]\d{3}(?:/?\d)?").fillna(False)
        )
        kinds["behaviour"] = _share(sample, values.isin(["0", "1", "2", "3", "6", "9"]))
        for kind in _VALUE_KINDS:
            words = value_words(kind)
            kinds[kind] = _share(sample, folded.isin(set(words)) | normed.isin(set(words)))
        kinds["boolean"] = _share(sample, folded.isin(set(value_words("boolean"))))
        kinds["country"] = _share(sample, values.str.fullmatch(r"[A-Za-z]{2}").fillna(False)) * (
            1.0 if len(values) <= 5 else 0.3
        )
        kinds["duo"] = _share(sample, values.str.contains(r"(?i)DUO[:_]?\d{7}").fillna(False))
        numeric = pd.to_numeric(values.str.replace(",", ".", regex=False), errors="coerce")
        kinds["number"] = _share(sample, numeric.notna())
        kinds["integer"] = _share(sample, values.str.fullmatch(r"[+-]?\d+").fillna(False))
    formats, date_share, missing = _date_formats(values, sample, order, date_named(col))
    kinds["date"] = date_share
    missing += [v for v in values if v in TEXT_MISSING]
    if not values.empty:
        # Shares of value kinds ignore missing-value tokens too.
        real = _share(sample, ~values.isin(TEXT_MISSING).to_numpy())
        for kind in kinds:
            if kind != "date" and real > 0:
                kinds[kind] = min(1.0, kinds[kind] / real)
    return Profile(
        col,
        counts,
        n,
        len(counts) / n if n else 0.0,
        kinds,
        formats,
        date_share,
        list(dict.fromkeys(missing)),
    )


def _date_formats(
    values: pd.Series, sample: pd.Series, order: list[str], named: bool = True
) -> tuple[list[str], float, list[str]]:
    """Formats (in the source's preferred order) that read this column as plausible dates,
    their share, tokens. Bare-number formats (%Y%m%d, Excel serials) only when the column's
    name says dates (`named`).

    Missing-value tokens do not count against the share; they are returned as tokens.
    """
    if values.empty:
        return [], 0.0, []
    token = values.isin(TEXT_MISSING).to_numpy() | values.isin(NUMERIC_MISSING).to_numpy()
    counts = sample.to_numpy()
    total = counts[~token].sum()
    left = ~token
    chosen: list[str] = []
    for fmt in order:
        if not left.any():
            break
        if bare_number(fmt) and not named:
            continue
        ok = plausible_dates(values, fmt, allow_month=True).notna().to_numpy() & left
        month_only = fmt not in ("iso", "excel_serial") and "%d" not in fmt
        if counts[ok].sum() >= (1 if month_only and chosen else max(1, 0.02 * total)):
            chosen.append(fmt)
            left &= ~ok
    num = pd.to_numeric(values, errors="coerce")
    serial = ((num >= _SERIAL_RANGE[0]) & (num <= _SERIAL_RANGE[1])).to_numpy() & left & named
    weak = 1.0
    if serial.any() and (chosen or counts[serial].sum() > 0.9 * total):
        weak = 1.0 if chosen else 0.6  # bare numbers are only weak evidence of dates
        chosen.append("excel_serial")
        left &= ~serial
    share = weak * float(counts[~left & ~token].sum() / total) if chosen and total else 0.0
    tokens = [v for v, t in zip(values, token, strict=True) if t] if share > 0.5 else []
    return chosen, share, tokens


# ---------------------------------------------------------------------------- scoring


def field_kind(tdef: TableDef, fdef: FieldDef) -> str | None:
    """The value kind that characterises a field, if any."""
    if fdef.type in ("date", "partial_date"):
        return "date"
    if fdef.code_system == "icdo3_topography":
        return "topography"
    if fdef.code_system == "icdo3_morphology":
        return "morphology"
    if fdef.code_system == "iso3166_alpha2":
        return "country"
    if fdef.code_system == "duo":
        return "duo"
    if fdef.name == "behaviour":
        return "behaviour"
    qualified = f"{tdef.name}.{fdef.name}"
    if qualified in _VALUE_KINDS:
        return qualified
    if fdef.name in _VALUE_KINDS:
        return fdef.name
    if fdef.type == "boolean":
        return "boolean"
    if fdef.type in ("integer", "float"):
        return "number"
    return None


@cache
def _death_names() -> frozenset[str]:
    words = _vocabulary()["fields"]["vital_status"]["death"]
    return frozenset(norm_name(str(w)) for w in words)


def death_flag(col: str, prof: Profile) -> bool:
    """A yes/no column named like "died?" (óbito, fallecido, verstorben): yes is dead."""
    return prof.kinds.get("boolean", 0.0) > 0.9 and name_score(col, _death_names()) >= 0.8


def score(tdef: TableDef, fdef: FieldDef, prof: Profile, col: str) -> float:
    """How well column `col` fits field `fdef` (0..1): name evidence and value evidence."""
    named = name_score(col, field_synonyms(tdef.name, fdef.name))
    kind = field_kind(tdef, fdef)
    if prof.n == 0:
        return 0.85 * named  # no values (an empty form): the name is all there is
    if kind is None:
        compat = 0.5
        if fdef.name in _KEY_FIELDS and fdef.name == tdef.primary_key[0]:
            compat = 0.3 + 0.7 * prof.unique_ratio
    else:
        compat = prof.kinds.get(kind, 0.0)
        if kind == "number" and fdef.type == "integer":
            compat = prof.kinds.get("integer", 0.0)
        if kind == "date" and fdef.type == "date" and prof.date_formats == ["%m/%Y"]:
            compat *= 0.5
        if kind == "vital_status" and death_flag(col, prof):
            compat = max(compat, prof.kinds["boolean"])
    if kind != "date" and prof.date_share > 0.8:
        return 0.0  # a column of dates feeds only date fields
    if kind in _SELF_EVIDENT and compat > 0.9:
        named = max(named, 0.6)  # the values alone say what this is
    if kind == "date" and compat < 0.5:
        return 0.3 * named
    return 0.6 * named + 0.4 * compat


@dataclass
class TableChoice:
    """A model table fed from one candidate, with column -> field assignments."""

    table: TableDef
    cand: Candidate
    fields: dict[str, tuple[str, float]]  # field -> (column, score)
    score: float
    # A foreign key reached through another source: (field, that source, our col, its col,
    # its key col), e.g. tumour.patient_id via the patient file's national id.
    join: tuple[str, Candidate, str, str, str] | None = None


def assign(
    tdef: TableDef,
    cand: Candidate,
    keys: dict[str, tuple[Candidate, str]],
    used: set[tuple[tuple, str]],
) -> TableChoice:
    """Best one-to-one column/field assignment for this table and candidate.

    Columns another table already took (other than keys) are not offered again; a foreign-key
    field scores by how many of its values are keys of the table it refers to.
    """
    fields = list(tdef.input_fields)
    cols = list(cand.profiles)
    if not cols:
        return TableChoice(tdef, cand, {}, 0.0)
    matrix = np.zeros((len(fields), len(cols)))
    for i, fdef in enumerate(fields):
        ref = keys.get(fdef.name) if fdef.name in tdef.foreign_keys else None
        for j, col in enumerate(cols):
            if (cand.signature(), col) in used and fdef.name not in _KEY_FIELDS:
                continue
            s = score(tdef, fdef, cand.profiles[col], col)
            if ref is not None:
                s = max(s, 0.95 * _overlap(cand.profiles[col], ref[0].profiles[ref[1]]))
            matrix[i, j] = s
    _prefer_key(tdef, cand, keys, fields, cols, matrix)
    rows, cols_idx = linear_sum_assignment(-matrix)
    chosen = {
        fields[i].name: (cols[j], float(matrix[i, j]))
        for i, j in zip(rows, cols_idx, strict=True)
        if matrix[i, j] >= MIN_SCORE
    }
    weight = {f.name: (2.0 if f.required else 1.0) for f in fields}
    total = sum(weight[f] * s for f, (_, s) in chosen.items())
    required = [f.name for f in fields if f.required]
    coverage = sum(1 for f in required if f in chosen) / max(1, len(required))
    label = norm_name(cand.label)
    names = table_synonyms(tdef.name)
    bonus = 1.5 if label in names or any(t in names for t in label.split("_")) else 0.0
    stems = {t for name in cand.unpivot or {} for t in name.split("_")}
    if stems & names:
        bonus += 1.0
    return TableChoice(tdef, cand, chosen, total * coverage + bonus)


def _prefer_key(
    tdef: TableDef,
    cand: Candidate,
    keys: dict[str, tuple[Candidate, str]],
    fields: list[FieldDef],
    cols: list[str],
    matrix: np.ndarray,
) -> None:
    """The candidate's detected key feeds the table's key field: when it is named like that key
    (a record number names a patient), or, unnamed, when no column is named like it and no
    other table took its key from this candidate."""
    pk = tdef.primary_key[0]
    if cand.key is None or pk not in _KEY_FIELDS or pk not in [f.name for f in fields]:
        return
    col, by_name = cand.key
    i, j = [f.name for f in fields].index(pk), cols.index(col)
    syns = field_synonyms(tdef.name, pk)
    if by_name and name_score(col, syns) >= 0.8:
        matrix[i, j] = max(matrix[i, j], 0.95)
    elif (
        not by_name
        and all(c is not cand for c, _ in keys.values())
        and max(name_score(c, syns) for c in cols) < 0.8
    ):
        matrix[i, j] = max(matrix[i, j], 0.6)


def _overlap(a: Profile, b: Profile) -> float:
    """Share of a column's values found among another column's values."""
    if a.n == 0 or b.n == 0:
        return 0.0
    found = a.counts.index.isin(b.counts.index)
    return float(a.counts[found].sum() / a.counts.sum())


def choose_tables(cands: list[Candidate]) -> list[TableChoice]:
    """For each model table, the candidate it fits best (tables in model order, keys first)."""
    model = load_model()
    choices: list[TableChoice] = []
    keys: dict[str, tuple[Candidate, str]] = {}
    used: set[tuple[tuple, str]] = set()
    for tdef in model.tables.values():
        options = [assign(tdef, c, keys, used) for c in cands]
        options = [o for o in options if _plausible(o)]
        if not options:
            continue
        best = max(options, key=lambda o: o.score)
        _find_join(best, keys, used)
        used.update((best.cand.signature(), col) for col, _ in best.fields.values())
        choices.append(best)
        pk = tdef.primary_key[0]
        if pk in best.fields:
            keys[pk] = (best.cand, best.fields[pk][0])
    return choices


def _find_join(
    choice: TableChoice, keys: dict[str, tuple[Candidate, str]], used: set[tuple[tuple, str]]
) -> None:
    """A missing foreign key found by joining on a shared identifier (e.g. a national id)."""
    for fk in choice.table.foreign_keys:
        if fk in choice.fields or fk not in keys:
            continue
        ref_cand, ref_key = keys[fk]
        if ref_cand is choice.cand:
            continue
        taken = {col for col, _ in choice.fields.values()}
        best: tuple[float, str, str] | None = None
        for col, prof in choice.cand.profiles.items():
            if col in taken or prof.unique_ratio == 0:
                continue
            for rcol, rprof in ref_cand.profiles.items():
                if rcol == ref_key or rprof.unique_ratio < 0.95:
                    continue
                ov = _overlap(prof, rprof)
                if ov >= 0.5 and (best is None or ov > best[0]):
                    best = (ov, col, rcol)
        if best is not None:
            choice.join = (fk, ref_cand, best[1], best[2], ref_key)
            choice.fields[fk] = (ref_key, min(0.9, best[0]))
            used.add((choice.cand.signature(), best[1]))


def _plausible(choice: TableChoice) -> bool:
    """Enough of the table's own (non-key) required fields were found."""
    required = [
        f.name for f in choice.table.input_fields if f.required and f.name not in _KEY_FIELDS
    ]
    found = [f for f in required if f in choice.fields and choice.fields[f][1] >= 0.55]
    if not required:
        return len(choice.fields) >= 3
    return len(found) >= max(1, (len(required) + 1) // 2)


# ---------------------------------------------------------------------------- the draft


@dataclass
class Draft:
    """The suggested spec as data (validated by MappingSpec) plus `# check:` notes by path."""

    spec: dict
    notes: dict[tuple, str]
    confidence: dict[tuple[str, str], float]


def suggest(source: Path, country: str | None = None) -> Draft:
    """Draft a mapping for SOURCE; `country` (`--country`) fills the patient country if no
    column has it, else a country code in the folder's name."""
    cands = find_candidates(source)
    if not cands:
        raise ReaderError(f"{source}: no readable CSV, xlsx, REDCap or FHIR files found")
    _profile_all(cands)
    _drop_wide_columns(cands)
    choices = choose_tables(cands)
    origin = "given by --country"
    if not country:
        country, origin = _country_from_path(source), "taken from the folder name"
    notes: dict[tuple, str] = {}
    confidence: dict[tuple[str, str], float] = {}
    sources: dict[str, dict] = {}
    tables: dict[str, dict] = {}
    names: dict[tuple, str] = {}
    for choice in choices:
        sig = choice.cand.signature()
        src_name = names.get(sig) or _source_name(choice, names)
        names[sig] = src_name
        if src_name not in sources:
            sources[src_name] = _source_entry(choice.cand)
            if choice.cand.date_question:
                notes[("sources", src_name, "date_formats")] = choice.cand.date_question
        if choice.join is not None and choice.join[1].signature() not in names:
            ref = choice.join[1]
            names[ref.signature()] = _source_name_for(ref, names)
            sources[names[ref.signature()]] = _source_entry(ref)
        tables[choice.table.name] = _table_entry(
            choice, src_name, (country, origin), notes, confidence, sources[src_name], names
        )
    _share_date_formats(sources)
    return Draft({"version": 1, "sources": sources, "tables": tables}, notes, confidence)


def _share_date_formats(sources: dict[str, dict]) -> None:
    """A source with no dated values (e.g. an empty REDCap form) reads dates like its file's
    other parts."""
    by_file = {e["file"]: e["date_formats"] for e in sources.values() if "date_formats" in e}
    for entry in sources.values():
        if "date_formats" not in entry and entry["file"] in by_file:
            entry["date_formats"] = by_file[entry["file"]]


def _country_from_path(source: Path) -> str | None:
    for part in reversed(source.resolve().parts):
        if re.fullmatch(r"[A-Z]{2}", part):
            return part
        m = re.search(r"(?:^|[_\-.])([A-Z]{2})(?:$|[_\-.])", part)
        if m:
            return m.group(1)
    return None


def _source_name(choice: TableChoice, names: dict[tuple, str]) -> str:
    return _source_name_for(choice.cand, names, choice.table.name)


def _source_name_for(cand: Candidate, names: dict[tuple, str], fallback: str = "source") -> str:
    base = norm_name(cand.label) or fallback
    taken = set(names.values())
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _source_entry(cand: Candidate) -> dict:
    entry: dict = {"file": cand.file, **cand.options}
    tokens = sorted({t for p in cand.profiles.values() for t in p.missing if t in TEXT_MISSING})
    if tokens:
        entry["missing"] = tokens
    if cand.date_order:
        used = [
            f
            for f in cand.date_order
            if f not in cand.undecided
            and any(f in p.date_formats for p in cand.profiles.values() if p.date_share > 0.5)
        ]
        if any(
            "excel_serial" in p.date_formats for p in cand.profiles.values() if p.date_share > 0.3
        ):
            used.append("excel_serial")
        if used:
            entry["date_formats"] = used
    if cand.where:
        entry["where"] = cand.where
    decimal_comma = any(
        p.kinds.get("number", 0) > 0.8 and p.counts.index.astype(str).str.contains(",").any()
        for p in cand.profiles.values()
    )
    if decimal_comma:
        entry["decimal"] = ","
    return entry


def _table_entry(
    choice: TableChoice,
    src_name: str,
    country_from: tuple[str | None, str],
    notes: dict[tuple, str],
    confidence: dict[tuple[str, str], float],
    source: dict,
    names: dict[tuple, str],
) -> dict:
    tdef = choice.table
    country, origin = country_from
    fields: dict[str, dict | str] = {}
    for fdef in tdef.input_fields:
        at = ("tables", tdef.name, "fields", fdef.name)
        if fdef.name in choice.fields:
            col, s = choice.fields[fdef.name]
            entry: dict
            if choice.join is not None and choice.join[0] == fdef.name:
                entry, note = {"column": col}, ""
            else:
                entry, note = _field_entry(
                    tdef,
                    fdef,
                    choice.cand.profiles[col],
                    col,
                    source,
                    choice.cand.choices.get(col),
                    choice.cand.undecided,
                )
            confidence[(tdef.name, fdef.name)] = s
            if s < CHECK_BELOW:
                entry["confidence"] = round(s, 2)
                note = f"unsure ({s:.2f}) that '{col}' is {fdef.name}" + (
                    f"; {note}" if note else ""
                )
            fields[fdef.name] = entry if len(entry) > 1 else entry["column"]
            if note:
                notes[at] = note
        elif fdef.name == "country" and country:
            fields["country"] = {"constant": country}
            notes[at] = f"country {country} {origin}"
        elif fdef.name == "behaviour" and "morphology" in choice.fields:
            continue  # taken from the morphology code (9836/3)
        elif fdef.required and (fallback := _fallback(choice, fdef)) is not None:
            fields[fdef.name], notes[at] = fallback
        elif fdef.required:
            fields[fdef.name] = {"column": "?"}
            left = [
                c
                for c in choice.cand.profiles
                if c not in {col for col, _ in choice.fields.values()}
            ]
            notes[at] = "required field: no column found; columns left: " + ", ".join(left[:10])
    out: dict = {"source": src_name}
    if choice.join is not None:
        fk, ref_cand, col, rcol, key = choice.join
        out["join"] = [{"source": names[ref_cand.signature()], "on": {col: rcol}, "columns": [key]}]
        notes[("tables", tdef.name, "join")] = (
            f"{fk} found by matching {col} to {rcol} in {ref_cand.file}"
        )
    if choice.cand.unpivot:
        out["unpivot"] = {"columns": choice.cand.unpivot}
    out["fields"] = fields
    idents = _identifiers(choice) if tdef.name == "patient" else {}
    if idents:
        out["identifiers"] = idents
        notes[("tables", tdef.name, "identifiers")] = "direct identifiers: pseudonymised at ingest"
    return out


def _fallback(choice: TableChoice, fdef: FieldDef) -> tuple[dict, str] | None:
    """A required field with no column: a constant named by the source, or a derived key."""
    tdef, cand = choice.table, choice.cand
    if fdef.allowed:
        words = value_words(field_kind(tdef, fdef) or fdef.name)
        hints = norm_name(cand.label).split("_")
        for name in cand.unpivot or {}:
            hints += name.split("_")
        for hint in hints:
            if hint in words and words[hint] in {str(a) for a in fdef.allowed}:
                return {"constant": words[hint]}, (
                    f"{fdef.name} '{words[hint]}' inferred from the name '{hint}'"
                )
    if tdef.primary_key == [fdef.name]:
        parent = next(
            (choice.fields[fk][0] for fk in tdef.foreign_keys if fk in choice.fields), None
        )
        if parent is None:
            return None
        if cand.unpivot:
            item = "_item"
        elif "redcap_repeat_instance" in cand.frame.columns:
            item = "redcap_repeat_instance"
        else:
            item = "_row"
        return {"template": f"{{{parent}}}-{{{item}}}"}, (
            f"no {fdef.name} column: key made from {parent} and {item}"
        )
    return None


def _field_entry(
    tdef: TableDef,
    fdef: FieldDef,
    prof: Profile,
    col: str,
    source: dict,
    codes: dict[str, str] | None = None,
    undecided: list[str] | None = None,
) -> tuple[dict, str]:
    entry: dict = {"column": col}
    notes: list[str] = []
    kind = field_kind(tdef, fdef)
    if kind == "date":
        src_formats = source.get("date_formats") or ["iso"]
        formats = [f for f in prof.date_formats if f not in (undecided or [])]
        if formats and not set(formats) <= set(src_formats):
            entry["date_formats"] = formats
        numeric_tokens = [t for t in prof.missing if t in NUMERIC_MISSING]
        if numeric_tokens:
            entry["missing"] = numeric_tokens
        if set(prof.date_formats) & set(undecided or []):
            notes.append("TODO day/month order undecided, see this source's date_formats")
    if kind == "vital_status" and not codes and death_flag(col, prof):
        said = value_words("boolean")
        died = {
            v: "dead" if said.get(v.casefold()) == "true" else "alive" for v in prof.counts.index
        }
        return {**entry, "values": died}, f"'{col}' says whether the patient died: yes is dead"
    if kind in _VALUE_KINDS or kind == "boolean" or fdef.allowed:
        vmap, unknown = _value_map(kind, fdef, prof, codes)
        if vmap:
            entry["values"] = vmap
        if unknown:
            notes.append("values not mapped: " + ", ".join(unknown[:8]))
    return entry, "; ".join(notes)


def _value_map(
    kind: str | None, fdef: FieldDef, prof: Profile, codes: dict[str, str] | None = None
) -> tuple[dict, list[str]]:
    """Local value -> model value; with REDCap codes, code -> model value via the label."""
    allowed = {str(a).casefold(): str(a) for a in fdef.allowed or []}
    words = value_words(kind) if kind else {}
    vmap: dict[str, str | None] = {}
    unknown: list[str] = []
    if codes:
        for code, label in codes.items():
            canon = (
                allowed.get(label.casefold())
                or words.get(label.casefold())
                or words.get(norm_name(label))
            )
            if canon is not None and (not allowed or canon.casefold() in allowed):
                vmap[code] = canon
            else:
                vmap[code] = label
                unknown.append(f"{code}={label}")
        return vmap, unknown
    for value in prof.counts.index.astype(str)[:40]:
        if value.casefold() in allowed or value in TEXT_MISSING:
            continue
        canon = words.get(value.casefold()) or words.get(norm_name(value))
        if canon is not None and canon.casefold() == value.casefold():
            continue
        if canon is not None and (not allowed or canon.casefold() in allowed):
            vmap[value] = canon
        elif value in TEXT_MISSING or value in NUMERIC_MISSING:
            vmap[value] = None
        else:
            unknown.append(value)
    return vmap, unknown


def _identifiers(choice: TableChoice) -> dict[str, str]:
    used = {col for col, _ in choice.fields.values()}
    out: dict[str, str] = {}
    for kind in ("given_name", "family_name", "national_id"):
        syns = field_synonyms("_identifier", kind)
        best = max(
            ((name_score(c, syns), c) for c in choice.cand.profiles if c not in used),
            default=(0.0, ""),
        )
        if best[0] >= 0.8:
            out[kind] = best[1]
            used.add(best[1])
    if out and "birth_date" in choice.fields:
        out["birth_date"] = choice.fields["birth_date"][0]
    return out


# ---------------------------------------------------------------------------- YAML out

_PLAIN = re.compile(r"^\w[\w.\-/ ]*$")
_NULLISH = {"null", "Null", "NULL", "~", ""}


def scalar(value: object) -> str:
    """A YAML scalar that reads back as the same text (our loader keeps plain scalars as text)."""
    if value is None:
        return "null"
    text = str(value)
    numeric = re.fullmatch(r"[+-]?[\d.]+", text) is not None
    if _PLAIN.match(text) and text not in _NULLISH and not numeric and not text.endswith(" "):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return scalar(value)


def to_yaml(draft: Draft, source: Path) -> str:
    """The draft as commented YAML: sources, then tables with one line per field."""
    lines = [
        f"# Draft mapping suggested by `ccdp map suggest {source}`.",
        "# Review every line marked `# check:`; then run",
        "#   ccdp ingest SOURCE --mapping THIS_FILE --store node.duckdb",
        "version: 1",
        "sources:",
    ]
    for name, entry in draft.spec["sources"].items():
        lines.append(f"  {scalar(name)}:")
        for k, v in entry.items():
            note = draft.notes.get(("sources", name, k))
            lines.append(f"    {k}: {flow(v)}" + (f"  # check: {note}" if note else ""))
        question = draft.notes.get(("sources", name, "date_formats"))
        if question and "date_formats" not in entry:
            lines.append(f"    # date_formats: [...]  # check: {question}")
    lines.append("tables:")
    for table, entry in draft.spec["tables"].items():
        lines.append(f"  {table}:")
        lines.append(f"    source: {scalar(entry['source'])}")
        if "join" in entry:
            note = draft.notes.get(("tables", table, "join"))
            lines.append("    join:" + (f"  # check: {note}" if note else ""))
            for j in entry["join"]:
                lines.append(f"      - source: {scalar(j['source'])}")
                lines.append(f"        on: {flow(j['on'])}")
                lines.append(f"        columns: {flow(j['columns'])}")
        if "unpivot" in entry:
            lines.append("    unpivot:  # check: one row per numbered column group")
            lines.append("      columns:")
            lines += [
                f"        {scalar(k)}: {flow(v)}" for k, v in entry["unpivot"]["columns"].items()
            ]
        lines.append("    fields:")
        for fname, fspec in entry["fields"].items():
            note = draft.notes.get(("tables", table, "fields", fname))
            line = f"      {fname}: {flow(fspec)}"
            lines.append(line + (f"  # check: {note}" if note else ""))
        if "identifiers" in entry:
            note = draft.notes.get(("tables", table, "identifiers"))
            lines.append("    identifiers:" + (f"  # {note}" if note else ""))
            lines += [f"      {k}: {flow(v)}" for k, v in entry["identifiers"].items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- measuring


def field_sources(spec: object) -> dict[tuple[str, str], tuple]:
    """(table, field) -> where its value comes from: (file, column), constant or template refs.

    Used to measure a draft against a hand-written spec: value maps and formats aside, did the
    draft feed each field from the same place?
    """
    from ccdp.ingest.mapping import MappingSpec

    assert isinstance(spec, MappingSpec)
    out: dict[tuple[str, str], tuple] = {}
    for table, parts in spec.tables.items():
        part = parts[0]
        file = spec.sources[part.source].file
        for name, fs in part.fields.items():
            if fs.column is not None:
                out[(table, name)] = ("column", file, fs.column)
            elif fs.constant is not None:
                out[(table, name)] = ("constant", fs.constant.casefold())
            else:
                refs = frozenset(re.findall(r"\{([^{}]+)\}", fs.template or ""))
                out[(table, name)] = ("template", file, refs)
    return out


def agreement(draft: object, reference: object) -> dict[str, tuple[int, int]]:
    """Per table: (fields fed as in the reference, fields in the reference)."""
    got, want = field_sources(draft), field_sources(reference)
    out: dict[str, tuple[int, int]] = {}
    for (table, name), where in want.items():
        right, total = out.get(table, (0, 0))
        out[table] = (right + int(got.get((table, name)) == where), total + 1)
    return out

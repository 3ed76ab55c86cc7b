"""Direct identifiers (`--with-identifiers`): names, national ids, and the cross-border copies'
typos and transliterations, so record linkage has a known right answer.

Names are drawn from each country's Faker locale lists (built once, drawn by index); national ids
carry their real check digits (FR NIR key, DE KVNR, IT codice fiscale, PL PESEL, BR CPF).
"""

from __future__ import annotations

import importlib
import unicodedata
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pyarrow as pa

from ccdp.synth.params import Params
from ccdp.synth.simulate import Cohort, completed_years


@dataclass
class Identities:
    """Identifier columns per case (cases in the cohort's final order)."""

    pid: pa.Array
    country: np.ndarray
    given: np.ndarray
    family: np.ndarray
    birth: pa.Array
    sex: pa.Array
    national_id: np.ndarray
    id_type: np.ndarray
    differences: dict[int, list[str]] = field(default_factory=dict)

    def for_country(self, ci: int) -> pa.Table:
        idx = pa.array(np.flatnonzero(self.country == ci))
        nid = pa.array(self.national_id, pa.string()).take(idx)
        return pa.table(
            {
                "patient_id": self.pid.take(idx),
                "given_name": pa.array(self.given, pa.string()).take(idx),
                "family_name": pa.array(self.family, pa.string()).take(idx),
                "birth_date": self.birth.take(idx),
                "sex": self.sex.take(idx),
                "national_id": nid,
                "national_id_type": pa.array(self.id_type, pa.string()).take(idx),
            }
        )


@cache
def name_lists(locale: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(names, cumulative weights) for given names by sex and family names by sex."""
    prov = importlib.import_module(f"faker.providers.person.{locale}").Provider

    def table(values) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(values, dict):
            names, w = list(values), np.array(list(values.values()), dtype=float)
        else:
            names, w = list(values), np.ones(len(values))
        return np.array(names, dtype=object), np.cumsum(w) / w.sum()

    if hasattr(prov, "male_last_names"):  # pl_PL: -ski/-cki forms agree with sex
        male = list(prov.male_last_names) + list(prov.unisex_last_names)
        female = [_feminine_pl(x) for x in prov.male_last_names] + list(prov.unisex_last_names)
    else:
        male = female = getattr(prov, "last_names_male", None) or prov.last_names
        if hasattr(prov, "last_names_female"):
            female = prov.last_names_female
    return {
        "given_male": table(prov.first_names_male),
        "given_female": table(prov.first_names_female),
        "family_male": table(male),
        "family_female": table(female),
    }


def _feminine_pl(name: str) -> str:
    for a, b in (("ski", "ska"), ("cki", "cka"), ("dzki", "dzka")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return name


def _draw(rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    names, cdf = table
    return names[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(names) - 1)]


def _digits_str(values: np.ndarray, width: int) -> np.ndarray:
    return np.char.zfill(values.astype(np.int64).astype(str), width)


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = days.astype("datetime64[D]")
    y = d.astype("datetime64[Y]").astype(np.int64) + 1970
    m = (d.astype("datetime64[M]") - d.astype("datetime64[Y]").astype("datetime64[M]")).astype(
        np.int64
    ) + 1
    dd = (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    return y, m, dd


def nir(rng: np.random.Generator, male: np.ndarray, birth: np.ndarray) -> np.ndarray:
    """French NIR: sex, YY, MM, department, commune, order, then the 97-complement key."""
    n = len(male)
    y, m, _ = _ymd(birth)
    dept = rng.integers(1, 96, n)
    dept = np.where(dept == 20, 21, dept)
    num = (
        np.where(male, 1, 2) * 10**12
        + (y % 100) * 10**10
        + m * 10**8
        + dept * 10**6
        + rng.integers(1, 1000, n) * 10**3
        + rng.integers(1, 1000, n)
    )
    key = 97 - num % 97
    return np.char.add(_digits_str(num, 13), _digits_str(key, 2))


def kvnr(rng: np.random.Generator, n: int) -> np.ndarray:
    """German health-insurance number: letter, 8 digits, check digit (weights 1,2 on the letter's
    two digits and the 8 digits, cross sums, mod 10)."""
    letter = rng.integers(1, 27, n)
    body = rng.integers(0, 10, (n, 8))
    digits = np.column_stack([letter // 10, letter % 10, body])
    prod = digits * np.tile([1, 2], 5)
    check = (prod // 10 + prod % 10).sum(axis=1) % 10
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))[letter - 1]
    return np.char.add(letters, _rows(np.column_stack([body, check])))


def _rows(digits: np.ndarray) -> np.ndarray:
    """Each row of a digit matrix as one string."""
    if len(digits) == 0:
        return np.zeros(0, dtype="<U1")
    as_bytes = (digits.astype(np.uint8) + ord("0")).tobytes()
    width = digits.shape[1]
    return np.frombuffer(as_bytes, dtype=f"S{width}").astype(f"U{width}")


def pesel(rng: np.random.Generator, male: np.ndarray, birth: np.ndarray) -> np.ndarray:
    """Polish PESEL: YYMMDD (month +20 after 2000), serial, sex digit (odd boys), check digit."""
    n = len(male)
    y, m, d = _ymd(birth)
    mm = m + np.where(y >= 2000, 20, 0)
    serial = rng.integers(0, 1000, n)
    sex_digit = rng.integers(0, 5, n) * 2 + np.where(male, 1, 0)
    digits = np.column_stack(
        [
            (y % 100) // 10, y % 10, mm // 10, mm % 10, d // 10, d % 10,
            serial // 100, (serial // 10) % 10, serial % 10, sex_digit,
        ]
    )  # fmt: skip
    check = (10 - (digits * np.array([1, 3, 7, 9, 1, 3, 7, 9, 1, 3])).sum(axis=1) % 10) % 10
    return _rows(np.column_stack([digits, check]))


def cpf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brazilian CPF: 9 digits and two mod-11 check digits, written 000.000.000-00."""
    d = rng.integers(0, 10, (n, 9))
    d10 = (d * np.arange(10, 1, -1)).sum(axis=1) * 10 % 11 % 10
    d11 = (np.column_stack([d, d10]) * np.arange(11, 1, -1)).sum(axis=1) * 10 % 11 % 10
    full = np.column_stack([d, d10, d11])
    parts = [_rows(full[:, a:b]) for a, b in ((0, 3), (3, 6), (6, 9), (9, 11))]
    dotted = np.char.add(np.char.add(parts[0], "."), np.char.add(parts[1], "."))
    return np.char.add(np.char.add(dotted, parts[2]), np.char.add("-", parts[3]))


_CF_ODD = {
    **dict(zip("0123456789", [1, 0, 5, 7, 9, 13, 15, 17, 19, 21], strict=True)),
    **dict(
        zip(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25,
             24, 23],
            strict=True,
        )
    ),
}  # fmt: skip
_CF_MONTH = np.array(list("ABCDEHLMPRST"))
_CF_TOWNS = np.array(
    ["H501", "F205", "F839", "L219", "G273", "D969", "A944", "D612", "A662", "C351"]
)


def _cf_letters(name: str, given: bool) -> str:
    """The three letters of a surname / given name in the codice fiscale."""
    s = "".join(c for c in _fold(name).upper() if c.isalpha())
    cons = [c for c in s if c not in "AEIOU"]
    vow = [c for c in s if c in "AEIOU"]
    if given and len(cons) >= 4:
        cons = [cons[0], cons[2], cons[3]]
    return ("".join(cons + vow) + "XXX")[:3]  # the rule pads names under three letters with X


def codice_fiscale(
    rng: np.random.Generator,
    family: np.ndarray,
    given: np.ndarray,
    male: np.ndarray,
    birth: np.ndarray,
) -> np.ndarray:
    """Italian codice fiscale: surname, name, YY, month letter, day (+40 girls), town, check."""
    n = len(male)
    if n == 0:
        return np.zeros(0, dtype=object)
    fam_u, fam_i = np.unique(family.astype(str), return_inverse=True)
    giv_u, giv_i = np.unique(given.astype(str), return_inverse=True)
    fam = np.array([_cf_letters(x, False) for x in fam_u])[fam_i]
    giv = np.array([_cf_letters(x, True) for x in giv_u])[giv_i]
    y, m, d = _ymd(birth)
    day = d + np.where(male, 0, 40)
    body = np.char.add(np.char.add(fam, giv), _digits_str(y % 100, 2))
    body = np.char.add(np.char.add(body, _CF_MONTH[m - 1]), _digits_str(day, 2))
    body = np.char.add(body, _CF_TOWNS[rng.integers(0, len(_CF_TOWNS), n)])
    return np.char.add(body, cf_check(body))


def cf_check(body: np.ndarray) -> np.ndarray:
    """Check character of 15-character codice fiscale bodies (odd/even position tables)."""
    n = len(body)
    codes = np.array(body, dtype="U15").view(np.uint32).reshape(n, 15).astype(np.int64)
    odd_lut = np.zeros(128, dtype=np.int64)
    for ch, v in _CF_ODD.items():
        odd_lut[ord(ch)] = v
    even = codes[:, 1::2]
    even_val = np.where(even < 65, even - 48, even - 65)
    total = odd_lut[codes[:, 0::2]].sum(axis=1) + even_val.sum(axis=1)
    return np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))[total % 26]


def _fold(text: str) -> str:
    """ASCII transliteration by dropping diacritics (Ł -> L, ß -> ss)."""
    text = text.replace("ł", "l").replace("Ł", "L").replace("ß", "ss").replace("ø", "o")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _german(text: str) -> str:
    """How a German registry writes a foreign name: umlauts as ae/oe/ue, other accents dropped."""
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue")):
        text = text.replace(a, b)
    return _fold(text)


def _typo(rng: np.random.Generator, text: str) -> str:
    """One keying error: swapped neighbours, a dropped or doubled letter."""
    if len(text) < 4:
        return text + text[-1]
    i = int(rng.integers(1, len(text) - 1))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def apply_birth_typos(rng: np.random.Generator, cohort: Cohort) -> dict[int, list[str]]:
    """Birth-date slips in the destination's record of cross-border children (day/month swapped,
    or one day off), kept only where the child's age at diagnosis is unchanged."""
    c = cohort.cases
    notes: dict[int, list[str]] = {}
    if not cohort.duplicates:
        return notes
    copies = np.array([b for _, b in cohort.duplicates])
    birth = c["birth"][copies]
    y, m, d = _ymd(birth)
    u = rng.random(len(copies))
    swap_ok = (d <= 12) & (d != m)
    swapped = np.array(
        [
            np.datetime64(f"{yy:04d}-{dd:02d}-{mm:02d}", "D").astype(np.int64) if ok else b
            for yy, mm, dd, ok, b in zip(y, m, d, swap_ok, birth, strict=True)
        ],
        dtype=np.int64,
    )
    new = np.where((u < 0.12) & swap_ok, swapped, np.where(u > 0.9, birth + 1, birth))
    same_age = completed_years(new, c["dx"][copies]) == completed_years(birth, c["dx"][copies])
    new = np.where(same_age & (new <= c["dx"][copies]), new, birth)
    for k, b in enumerate(copies):
        if new[k] != birth[k]:
            kind = (
                "day and month swapped" if abs(int(new[k]) - int(birth[k])) > 1 else "one day off"
            )
            notes.setdefault(int(b), []).append(f"birth_date: {kind}")
    c["birth"][copies] = new
    return notes


def make_identities(
    cohort: Cohort, tables, seed: int, params: Params, notes: dict[int, list[str]]
) -> Identities:
    """Names and national ids for every patient; copies inherit the origin's, with slips."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 2])))
    c = cohort.cases
    n = cohort.n
    male = c["sex"] == 0
    given = np.empty(n, dtype=object)
    family = np.empty(n, dtype=object)
    nid = np.full(n, "", dtype=object)
    id_type = np.empty(n, dtype=object)
    for ci, code in enumerate(cohort.countries):
        country = params.country(code)
        lists = name_lists(country.faker_locale)
        m = c["country"] == ci
        for sex, sm in (("male", male), ("female", ~male)):
            k = m & sm
            given[k] = _draw(rng, lists[f"given_{sex}"], int(k.sum()))
            family[k] = _draw(rng, lists[f"family_{sex}"], int(k.sum()))
        id_type[m] = country.national_id
        idx = np.flatnonzero(m)
        kind = country.national_id
        if kind == "nir":
            nid[idx] = nir(rng, male[idx], c["birth"][idx])
        elif kind == "kvnr":
            nid[idx] = kvnr(rng, len(idx))
        elif kind == "pesel":
            nid[idx] = pesel(rng, male[idx], c["birth"][idx])
        elif kind == "cpf":
            nid[idx] = cpf(rng, len(idx))
        elif kind == "codice_fiscale":
            nid[idx] = codice_fiscale(rng, family[idx], given[idx], male[idx], c["birth"][idx])
        else:
            nid[idx] = np.char.add("", _digits_str(rng.integers(10**8, 10**9, len(idx)), 9))
    differences = {k: list(v) for k, v in notes.items()}
    patient_birth = tables.tables["patient"]["birth_date"].to_numpy(zero_copy_only=False)
    for origin, copy in cohort.duplicates:
        dest = cohort.countries[c["country"][copy]]
        diffs = differences.setdefault(copy, [])
        fam, giv = str(family[origin]), str(given[origin])
        written = _german(fam) if dest == "DE" else _fold(fam)
        if written != fam and rng.random() < 0.8:
            diffs.append(f"family_name: transliterated {fam!r} -> {written!r}")
            fam = written
        g_written = _german(giv) if dest == "DE" else _fold(giv)
        if g_written != giv:
            diffs.append(f"given_name: transliterated {giv!r} -> {g_written!r}")
            giv = g_written
        if rng.random() < 0.3:
            typo = _typo(rng, fam)
            diffs.append(f"family_name: typo {fam!r} -> {typo!r}")
            fam = typo
        if rng.random() < 0.2:
            typo = _typo(rng, giv)
            diffs.append(f"given_name: typo {giv!r} -> {typo!r}")
            giv = typo
        family[copy], given[copy] = fam, giv
        b_origin, b_copy = patient_birth[origin], patient_birth[copy]
        if len(b_origin) != len(b_copy):
            diffs.append("birth_date: day withheld in one record (YYYY-MM)")
        nid[copy] = ""
        diffs.append("national_id: not held by the destination registry")
    patient = tables.tables["patient"]
    return Identities(
        pid=patient["patient_id"].combine_chunks(),
        country=c["country"],
        given=given,
        family=family,
        birth=patient["birth_date"].combine_chunks(),
        sex=patient["sex"].combine_chunks(),
        national_id=nid.astype(object),
        id_type=id_type,
        differences=differences,
    )

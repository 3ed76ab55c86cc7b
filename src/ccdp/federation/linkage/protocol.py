"""The bodies the linkage service takes and gives: what crosses between a node and the service.

A node sends, per record, only a per-run pseudonym (an HMAC of its stored patient key under a
random key the node holds for this run only) and the encoding (base64). Once the run is linked it
gets back, per linked record only, the pseudonym, a random group id and the group's size; it
then sends the earliest diagnosis year and the last-contact year of those linked records only (the
keep rule's inputs: the years of the children found in no other registry never leave the node),
and finally fetches whether its copy is the one pooled results keep.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from ccdp.federation.hub.doors import Strict
from ccdp.linkage.schema import CHILD_THRESHOLD

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PSEUDONYM = r"^[0-9a-f]{32}$"
MAX_NODES = 64
MAX_RECORDS = 2_000_000
MAX_BITS = 8192

Name = Annotated[str, Field(pattern=NAME, max_length=64)]


class CreateRun(Strict):
    """An admin's new run: its id, the nodes that take part, the threshold (for the
    partnership's segmented schema a match probability, for a one-filter schema a Dice
    coefficient; default: the one the core measured for the partnership's schema)."""

    run_id: Name
    nodes: list[Name] = Field(min_length=2, max_length=MAX_NODES)
    threshold: float = Field(CHILD_THRESHOLD, ge=0.5, le=1.0)

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: list[str]) -> list[str]:
        if len(set(nodes)) != len(nodes):
            raise ValueError("a node is named twice")
        return nodes


class UploadRecord(Strict):
    """One record: per-run pseudonym, encoding (standard base64)."""

    p: str = Field(pattern=PSEUDONYM)
    clk: str = Field(min_length=4, max_length=(MAX_BITS // 8) * 4 // 3 + 4)


class YearRecord(Strict):
    """A linked record's earliest diagnosis year and its last-contact year (years only; null:
    unknown, sorts last): the earliest diagnosis is kept, and among copies diagnosed in the same
    year the one followed longest, so a short stay abroad does not stand for the child."""

    p: str = Field(pattern=PSEUDONYM)
    year: int | None = Field(None, ge=1900, le=2200)
    last: int | None = Field(None, ge=1900, le=2200)


class Years(Strict):
    """A node's years (diagnosis, last contact) for exactly its linked records of the run."""

    records: list[YearRecord] = Field(max_length=MAX_RECORDS)


class Upload(Strict):
    """A node's whole upload for a run; every node of a run must send the same schema, secret
    id and length, or their encodings could not be compared."""

    schema_id: str = Field(min_length=1, max_length=80)
    secret_id: str = Field(pattern=r"^[0-9a-f]{8,40}$")
    bits: int = Field(ge=64, le=MAX_BITS, multiple_of=64)
    records: list[UploadRecord] = Field(max_length=MAX_RECORDS)

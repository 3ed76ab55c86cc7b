"""The one seam between the protocol and the linkage core (`ccdp.linkage`): encode a frame of
identifiers, name the schema and the secret, link the encodings of several registries.

Everything the node and the service need from the core passes through these four functions, so a
change of the core's API is absorbed here and nowhere else.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ccdp.linkage import normalise
from ccdp.linkage.encode import Encodings, encode, field_key
from ccdp.linkage.match import link
from ccdp.linkage.schema import CHILD_SCHEMA, LinkageError, LinkageSchema

__all__ = [
    "CHILD_SCHEMA",
    "Encoded",
    "LinkageError",
    "encode_frame",
    "link_registries",
    "schema_id",
    "secret_id",
]

IDENTIFIER_COLUMNS = ("given_name", "family_name", "birth_date", "sex")


def schema_id(schema: LinkageSchema = CHILD_SCHEMA) -> str:
    """Names the schema by its version and a digest of its whole definition: two nodes whose
    encodings could not be compared never share a schema id."""
    return f"{schema.version}:{hashlib.sha256(repr(schema).encode()).hexdigest()[:12]}"


def secret_id(secret: bytes, schema: LinkageSchema = CHILD_SCHEMA) -> str:
    """Names the shared secret without revealing it (an HKDF output of its own label): nodes and
    the service can see that two encodings were made with the same secret, and nothing else."""
    return field_key(secret, schema, "secret-id")[:8].hex()


class Encoded:
    """A registry's encodings with their birth years (the salt, stored as `block_year`)."""

    def __init__(self, packed: np.ndarray, bits: int, years: np.ndarray) -> None:
        self.packed, self.bits, self.years = packed, bits, years

    def clk(self, row: int) -> bytes:
        return bytes(self.packed[row].tobytes())


def encode_frame(
    frame: pd.DataFrame, secret: bytes, schema: LinkageSchema = CHILD_SCHEMA
) -> Encoded:
    """Encode every row of an identifiers frame (`identifiers.csv` columns)."""
    enc = encode(frame, secret, schema)
    year, _, _ = normalise.birth_date(frame["birth_date"])
    return Encoded(enc.packed, enc.bits, np.asarray(year, dtype=np.int64))


def _encodings(clks: list[bytes], bits: int) -> Encodings:
    packed = np.frombuffer(b"".join(clks), dtype=np.uint8).reshape(len(clks), bits // 8)
    pc = np.bitwise_count(np.ascontiguousarray(packed).view(np.uint64)).sum(axis=1)
    return Encodings(packed.copy(), pc.astype(np.int32), bits)


def link_registries(
    clks: dict[str, list[bytes]], bits: int, threshold: float
) -> dict[str, np.ndarray]:
    """Group labels per registry (one int per record, in the order given): records of one child
    share a label; a group holds at most one record per registry."""
    encs = {name: _encodings(rows, bits) for name, rows in clks.items()}
    return link(encs, threshold=threshold, layout=CHILD_SCHEMA.layout)

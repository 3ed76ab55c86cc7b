"""Privacy-preserving record linkage: children registered in two countries found without any
identifier leaving a node (Bloom-filter encodings, blocking, Dice comparison, assignment).
See docs/linkage.md."""

from ccdp.linkage.encode import Encodings, encode
from ccdp.linkage.match import Blocking, dice, link, match_pairs
from ccdp.linkage.schema import (
    CHILD_SCHEMA,
    CHILD_THRESHOLD,
    FieldSpec,
    LinkageError,
    LinkageSchema,
)

__all__ = [
    "CHILD_SCHEMA",
    "CHILD_THRESHOLD",
    "Blocking",
    "Encodings",
    "FieldSpec",
    "LinkageError",
    "LinkageSchema",
    "dice",
    "encode",
    "link",
    "match_pairs",
]

"""Pseudonymisation at the door: record keys replaced by a keyed HMAC-SHA256 of the site's value.

Every field the model marks `identifier` (patient, tumour, event, treatment and specimen ids and
the foreign keys naming them) is replaced, with one key and no per-field salt, so a foreign key
still equals the pseudonym of the key it refers to. The site's own text is kept only in the
node's quarantine (`source_key`), so the data manager can find a rejected row.

The HMAC is computed in DuckDB SQL (sha256 over the RFC 2104 inner and outer pads), so a million
keys are pseudonymised in one vectorised pass; `pseudonym()` is the same function in Python, used
by tests and by anyone who must find a known patient's pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "psn_"
HEX_CHARS = 32  # 128 bits of the digest: collisions are negligible at any registry's size

_BLOCK = 64  # SHA-256 block size in bytes


def _pads(key: bytes) -> tuple[bytes, bytes]:
    block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
    block = block.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def pseudonym(key: bytes, value: str) -> str:
    """The pseudonym of one record key (reference implementation)."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]


def pseudonym_sql(key: bytes) -> str:
    """SQL template (with `{raw}` for the cleaned key text) computing `pseudonym(key, raw)`."""
    inner, outer = _pads(key)
    return (
        f"CASE WHEN {{raw}} IS NULL THEN NULL ELSE '{PREFIX}' || left(sha256(unhex('{outer.hex()}')"
        f" || unhex(sha256(unhex('{inner.hex()}') || encode({{raw}})))), {HEX_CHARS}) END"
    )

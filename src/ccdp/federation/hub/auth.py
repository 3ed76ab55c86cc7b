"""Tokens: random, shown once, stored only as a SHA-256 digest (like an API key, never a password).

A node token and a user token look different (`ccdp-node-…`, `ccdp-user-…`) so that a token pasted
in the wrong place is recognised, but what a token may do is decided by the table it is found in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

TokenKind = Literal["node", "user"]
ROLES = ("researcher", "board", "admin", "statistician", "expert")


def new_token(kind: TokenKind) -> str:
    """256 bits from the OS's CSPRNG."""
    return f"ccdp-{kind}-{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Digest stored in the database; a high-entropy token needs no salt or slow hash."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())

"""Database URLs as the hub takes them (shared by db.py and the audit key's location)."""

from __future__ import annotations

from pathlib import Path


def normalise_url(url: str) -> str:
    """Accept a bare path as SQLite and `postgresql://` as psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url

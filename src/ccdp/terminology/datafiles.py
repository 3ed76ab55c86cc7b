"""Where the terminology's code lists live: one helper for every module that reads them."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def data_path(name: str) -> Traversable:
    """The packaged file `name` of `ccdp/terminology/data/` (works from a wheel or a zip too)."""
    return resources.files("ccdp.terminology") / "data" / name

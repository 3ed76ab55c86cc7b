"""Code validity for the model's code systems, over distinct values (never per row).

The code lists belong to ccdp.terminology; this module asks it and turns the answers into the
reasons an edit prints. Values must be valid *and* canonical (`C42.1`, `9836`, `FR`,
`DUO:0000042`): other spellings are a mapping spec's job to normalise before the store.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from ccdp.terminology import icdo3

_DUO_ID = re.compile(r"DUO:\d{7}")
_ALPHA2 = re.compile(r"[A-Z]{2}")


def _topography(values: list[str]) -> dict[str, str]:
    series = pd.Series(values, dtype=object)
    valid = icdo3.valid_topography(series)
    canonical = (icdo3.normalise_topography(series) == series).to_numpy(dtype=bool)
    out: dict[str, str] = {}
    for value, ok, canon in zip(values, valid, canonical, strict=True):
        if not ok:
            out[value] = "is not an ICD-O-3 topography code (C00.0-C80.9, written like C42.1)"
        elif not canon:
            out[value] = "is not in canonical form (write ICD-O-3 topography like C42.1)"
    return out


def _morphology(values: list[str]) -> dict[str, str]:
    series = pd.Series(values, dtype=object)
    valid = icdo3.valid_morphology(series)
    canonical = (icdo3.normalise_morphology(series)["morphology"] == series).to_numpy(dtype=bool)
    out: dict[str, str] = {}
    for value, ok, canon in zip(values, valid, canonical, strict=True):
        if not ok:
            out[value] = "is not an ICD-O-3 morphology code (4 digits, e.g. 9836)"
        elif not canon:
            out[value] = "is not in canonical form (4 digits without behaviour, e.g. 9836)"
    return out


def _optional(module: str, name: str) -> Callable[..., object] | None:
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return fn if callable(fn) else None


def _country(values: list[str]) -> dict[str, str]:
    valid_country = _optional("ccdp.terminology.countries", "valid_country")
    if valid_country is not None:
        valid = np.asarray(valid_country(values), dtype=bool)
    else:  # terminology without a country list: check the ISO 3166-1 alpha-2 form only
        valid = np.array([bool(_ALPHA2.fullmatch(v)) for v in values], dtype=bool)
    return {
        v: "is not an ISO 3166-1 alpha-2 country code (e.g. FR)"
        for v, ok in zip(values, valid, strict=True)
        if not ok
    }


def _consent(values: list[str]) -> dict[str, str]:
    parse = _optional("ccdp.terminology.duo", "parse_consent")
    out: dict[str, str] = {}
    for value in values:
        tokens = value.split()
        if parse is not None:
            try:
                parsed = parse(value)
            except Exception as exc:  # ConsentError: the token and the rule, in its message
                out[value] = f"is not valid DUO consent: {exc}"
                continue
            if parsed != tokens:
                canonical = " ".join(str(t) for t in parsed)  # type: ignore[attr-defined]
                out[value] = f"is not in canonical form (write {canonical})"
        else:
            bad = [t for t in tokens if not _DUO_ID.fullmatch(t)]
            if bad:
                out[value] = f"holds {', '.join(bad)}, not a GA4GH DUO identifier (DUO:0000042)"
    return out


CHECKERS: dict[str, Callable[[list[str]], dict[str, str]]] = {
    "icdo3_topography": _topography,
    "icdo3_morphology": _morphology,
    "iso3166_alpha2": _country,
    "duo": _consent,
}


def invalid_codes(code_system: str, values: list[str]) -> dict[str, str]:
    """For each invalid value of a code system, the reason (message text after the value)."""
    if not values:
        return {}
    try:
        checker = CHECKERS[code_system]
    except KeyError:
        raise KeyError(f"no validity check for code system {code_system!r}") from None
    return checker(values)

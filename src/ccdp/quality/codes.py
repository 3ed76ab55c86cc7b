"""Code validity for the model's code systems, over distinct values (never per row).

The lists themselves belong to ccdp.terminology; this module asks it and turns the answers into
reasons an edit can print. Where terminology offers no lookup for a system, the documented format
of the code is checked instead (ISO 3166 alpha-2: two capital letters; DUO: DUO:0000000).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "icdo3_topography": (re.compile(r"C\d{2}\.\d"), "ICD-O-3 topography (C00.0-C80.9)"),
    "icdo3_morphology": (re.compile(r"\d{4}"), "ICD-O-3 morphology (4 digits, 8000-9993)"),
    "iso3166_alpha2": (re.compile(r"[A-Z]{2}"), "ISO 3166-1 alpha-2 country code"),
    "duo": (re.compile(r"DUO:\d{7}"), "GA4GH DUO code (DUO:0000042)"),
}

# terminology module and function answering "is this code valid?" for each code system
_LOOKUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "icdo3_topography": ("ccdp.terminology.icdo3", ("valid_topography",)),
    "icdo3_morphology": ("ccdp.terminology.icdo3", ("valid_morphology",)),
    "iso3166_alpha2": ("ccdp.terminology.countries", ("valid_country", "is_valid", "valid")),
    "duo": ("ccdp.terminology.duo", ("valid_duo", "is_valid", "valid")),
}


def _lookup(code_system: str) -> Callable[[str], Any] | None:
    """The terminology predicate for a code system, if terminology provides one."""
    module_name, names = _LOOKUPS.get(code_system, ("", ()))
    if not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    for name in names:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def _in_range(code_system: str, code: str) -> bool:
    if code_system == "icdo3_topography":
        return 0 <= int(code[1:3]) <= 80
    if code_system == "icdo3_morphology":
        return 8000 <= int(code) <= 9993
    return True


def is_valid(code_system: str, code: str) -> bool:
    """Whether one code is valid in its system."""
    fn = _lookup(code_system)
    if fn is not None:
        return bool(fn(code))
    pattern, _ = _FORMATS[code_system]
    return bool(pattern.fullmatch(code)) and _in_range(code_system, code)


def describe(code_system: str) -> str:
    """Human name of a code system, for messages."""
    return _FORMATS.get(code_system, (None, code_system))[1]


def invalid_codes(code_system: str, values: Iterable[str]) -> dict[str, str]:
    """For each invalid value, the reason (DUO consent values are space-separated lists)."""
    reasons: dict[str, str] = {}
    for value in values:
        if code_system == "duo":
            bad = [t for t in value.split() if not is_valid("duo", t)]
            if bad:
                reasons[value] = f"holds {', '.join(bad)}, not a {describe('duo')}"
        elif not is_valid(code_system, value):
            reasons[value] = f"is not a valid {describe(code_system)}"
    return reasons

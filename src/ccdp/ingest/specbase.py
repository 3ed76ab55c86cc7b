"""Base model for declarative ingest specs: unknown keys are errors that suggest the intended key.

Pydantic's own `extra="forbid"` says "extra inputs are not permitted" without naming what was
meant; a data manager who typed `colum:` wants to read "did you mean 'column'?".
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def close_matches(word: str, candidates: list[str] | set[str], n: int = 3) -> list[str]:
    """Candidates that look like `word` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def did_you_mean(word: str, candidates: list[str] | set[str]) -> str:
    """' (did you mean 'x'?)' when something close exists, else ''."""
    hits = close_matches(word, candidates)
    return f" (did you mean {' or '.join(repr(h) for h in hits)}?)" if hits else ""


class StrictModel(BaseModel):
    """A spec node that rejects unknown keys, naming the key and the closest allowed one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed: set[str] = set()
        for name, info in cls.model_fields.items():
            allowed.add(name)
            if info.alias:
                allowed.add(info.alias)
        for key in data:
            if str(key) not in allowed:
                visible = sorted(a for a in allowed if not a.endswith("_"))
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key '{key}'{hint}; allowed keys: {allowed}",
                    {
                        "key": str(key),
                        "hint": did_you_mean(str(key), visible),
                        "allowed": ", ".join(visible),
                    },
                )
        return data


class StringLoader(yaml.SafeLoader):
    """YAML where every plain scalar is text: `no`, `01`, `NA` stay as written, only `null`/`~`
    mean None. Codes in value maps must not turn into booleans or octal numbers; Pydantic
    converts the few numeric and boolean options from text itself."""


StringLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag == "tag:yaml.org,2002:null"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

"""Reading a declarative spec (a study, a project) from a YAML/JSON file or a dict: one reader, so
every spec's file errors name the file and the key path the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ccdp.errors import CcdpError

M = TypeVar("M", bound=BaseModel)


def read_spec(
    source: Path | str | dict[str, Any], kind: str, keys: str, error: type[CcdpError]
) -> tuple[dict[str, Any], str]:
    """The spec's mapping and where it came from (the file; for a dict, the first word of
    `kind`); `error` names the file when it is unreadable, not YAML/JSON or not a mapping."""
    if isinstance(source, dict):
        return source, kind.split()[0]
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the {kind} ({exc.strerror})") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise error(f"{path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: a {kind} is a mapping of keys ({keys}, ...)")
    return raw, str(path)


def first_error(exc: ValidationError, count_more: bool = False) -> str:
    """The first validation error as `key.path: message` (and how many more, if asked)."""
    errors = exc.errors()
    loc = ".".join(str(p) for p in errors[0]["loc"] if p != "root")
    msg = str(errors[0]["msg"]).removeprefix("Value error, ")
    extra = f" (and {len(errors) - 1} more)" if count_more and len(errors) > 1 else ""
    return f"{loc}: {msg}{extra}" if loc else msg + extra


def load_spec(
    source: Path | str | dict[str, Any],
    model: type[M],
    kind: str,
    keys: str,
    error: type[CcdpError],
    count_more: bool = False,
) -> M:
    """A spec of `model` from a file or a mapping; `error` names the file and the first key that
    is wrong (and how many more, if asked)."""
    raw, where = read_spec(source, kind, keys, error)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{where}: {first_error(exc, count_more=count_more)}") from None

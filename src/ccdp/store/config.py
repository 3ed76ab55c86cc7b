"""The node's config file beside its store: `<store stem>.node.yaml`.

It holds secrets and local settings that must never enter the store itself, e.g. the key of the
pseudonymisation HMAC (`pseudonym_key`) and the key of the audit log's HMAC chain (`audit_key`).
Other stages (the disclosure policy) keep their own keys in the same file, so writes are
read-modify-write and keep every other key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from ccdp.errors import CcdpError
from ccdp.store.files import replace_durably


class NodeConfigError(CcdpError):
    """The node config file is unreadable or holds an invalid value."""


def node_config_path(store_path: str | Path) -> Path:
    """`site.duckdb` -> `site.node.yaml` in the same folder."""
    store = Path(store_path)
    return store.with_name(f"{store.stem}.node.yaml")


def load_node_config(store_path: str | Path) -> dict[str, Any]:
    """The node config as a dict ({} when the file does not exist yet)."""
    path = node_config_path(store_path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise NodeConfigError(f"node config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NodeConfigError(
            f"node config {path} must be a YAML mapping, got {type(data).__name__}"
        )
    return data


def update_node_config(store_path: str | Path, **values: Any) -> Path:
    """Set keys in the node config, keeping the others; the file is private to its owner (0600)."""
    path = node_config_path(store_path)
    data = load_node_config(store_path) | values
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())  # it holds the node's pseudonym key: a crash must not lose it
    replace_durably(tmp, path)
    return path


def _secret_key(store_path: str | Path, name: str, create: bool, missing: str) -> bytes:
    """A node secret (hex, >= 16 bytes) from the config, generated and saved on first use."""
    value = load_node_config(store_path).get(name)
    if value is None:
        if not create:
            raise NodeConfigError(f"no {name} in {node_config_path(store_path)}; {missing}")
        value = secrets.token_hex(32)
        update_node_config(store_path, **{name: value})
    try:
        key = bytes.fromhex(str(value))
    except ValueError as exc:
        raise NodeConfigError(
            f"{name} in {node_config_path(store_path)} must be hex digits"
        ) from exc
    if len(key) < 16:
        raise NodeConfigError(
            f"{name} in {node_config_path(store_path)} is too short (need >= 16 bytes)"
        )
    return key


def pseudonym_key(store_path: str | Path, *, create: bool = True) -> bytes:
    """The node's 32-byte HMAC key, generated (and saved in the config) on first use."""
    return _secret_key(store_path, "pseudonym_key", create, "ingest identifiers first")


def audit_key(store_path: str | Path) -> bytes:
    """The node's 32-byte audit-log HMAC key, generated (and saved in the config) on first use.

    Kept apart from `pseudonym_key` so that showing one (e.g. to re-key pseudonyms) never lets
    anyone rewrite the audit chain. It is never written into the log itself.
    """
    return _secret_key(store_path, "audit_key", True, "")

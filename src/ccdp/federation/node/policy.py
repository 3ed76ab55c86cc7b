"""The node's policy as the node reads it: validated against the analyses this ccdp registers.

The disclosure floor cannot know the analyses (they sit above it), so the node, which knows both,
passes the registered names when it loads or sets its policy.

The file is read at every call (an operator's change applies to the next task), but parsed only
when its text differs from the last text parsed: a node agent asks for its policy several times
per task, and parsing YAML is what cost, not reading a small file.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ccdp.analyses import registry
from ccdp.disclosure import policy
from ccdp.disclosure.policy import NodePolicy, parse_policy, policy_path

# policy file -> (its text and the analyses it was checked against, its policy)
_PARSED: dict[str, tuple[tuple[str, tuple[str, ...]], NodePolicy]] = {}
_LOCK = threading.Lock()
MAX_PARSED = 64


def load_policy(store: Path | str) -> NodePolicy:
    """The node's policy (defaults when it has none); unknown analysis names are a PolicyError."""
    path = policy_path(store)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NodePolicy()
    key, names = str(path), tuple(registry.names())
    with _LOCK:
        held = _PARSED.get(key)
    if held is not None and held[0] == (text, names):
        return held[1].model_copy()  # a copy: a caller's change never reaches the next caller
    parsed = parse_policy(text, path, names)
    with _LOCK:
        if len(_PARSED) >= MAX_PARSED:
            _PARSED.clear()
        _PARSED[key] = ((text, names), parsed)
    return parsed.model_copy()


def set_policy_value(store: Path | str, key: str, value: str) -> NodePolicy:
    """Set one policy key from its text form, checked as `load_policy` checks it."""
    return policy.set_policy_value(store, key, value, registry.names())

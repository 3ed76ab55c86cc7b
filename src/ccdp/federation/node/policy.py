"""The node's policy as the node reads it: validated against the analyses this ccdp registers.

The disclosure floor cannot know the analyses (they sit above it), so the node, which knows both,
passes the registered names when it loads or sets its policy.
"""

from __future__ import annotations

from pathlib import Path

from ccdp.analyses import registry
from ccdp.disclosure import policy
from ccdp.disclosure.policy import NodePolicy


def load_policy(store: Path | str) -> NodePolicy:
    """The node's policy (defaults when it has none); unknown analysis names are a PolicyError."""
    return policy.load_policy(store, registry.names())


def set_policy_value(store: Path | str, key: str, value: str) -> NodePolicy:
    """Set one policy key from its text form, checked as `load_policy` checks it."""
    return policy.set_policy_value(store, key, value, registry.names())

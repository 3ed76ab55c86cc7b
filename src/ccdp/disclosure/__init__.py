"""Disclosure control at the node: what may leave it, under the node's own policy."""

from ccdp.disclosure.policy import NodePolicy, PolicyError, load_policy, policy_path, save_policy
from ccdp.disclosure.rules import Checked, Refusal, apply_rules

__all__ = [
    "Checked",
    "NodePolicy",
    "PolicyError",
    "Refusal",
    "apply_rules",
    "load_policy",
    "policy_path",
    "save_policy",
]

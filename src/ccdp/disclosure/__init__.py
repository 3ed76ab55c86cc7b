"""Disclosure control at the node: the one gate for what leaves it, under the node's own policy."""

from ccdp.disclosure.gate import Checked, release
from ccdp.disclosure.policy import NodePolicy, PolicyError, load_policy, policy_path, save_policy
from ccdp.disclosure.refusals import Refusal, public_reason

__all__ = [
    "Checked",
    "NodePolicy",
    "PolicyError",
    "Refusal",
    "load_policy",
    "policy_path",
    "public_reason",
    "release",
    "save_policy",
]

"""The gate for a trial's randomisation: only a patient's strata leave, each a declared level."""

from __future__ import annotations

from ccdp.cohort.view import declared_levels, view_variables
from ccdp.disclosure.refusals import Refusal
from ccdp.wire.case_summary import text_problem

MAX_STRATA = 6


def check_strata(names: list[str]) -> None:
    """Refuse a trial's strata that are not categorical view variables (or too many), before
    the node reads a value (see `release_strata`)."""
    known = view_variables()
    if len(names) > MAX_STRATA:
        raise Refusal("strata", f"{len(names)} strata (at most {MAX_STRATA})")
    for name in names:
        var = known.get(name)
        if var is None or var.var_class != "categorical":
            raise Refusal("strata", name[:40])


def release_strata(strata: dict[str, str]) -> dict[str, str]:
    """The strata of one patient that may go to a trial's randomisation (with the patient's
    per-trial pseudonym, and nothing else: docs/randomisation.md). The hub says which
    variables a trial stratifies by; a hub that asked for a key, a date or a number would be
    told the child's own value, so the node checks again: at most MAX_STRATA strata, each a
    categorical view variable, each value one of its declared levels or, for a variable
    without declared levels (risk_group, stage), plain text under the case summary's rules."""
    check_strata(list(strata))
    for name, value in strata.items():
        levels = declared_levels(name)
        ok = value in levels if levels is not None else text_problem(value) is None
        if not ok or len(value) > 40:
            raise Refusal("strata", name)
    return dict(strata)

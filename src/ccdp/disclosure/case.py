"""The gate for an expert board's case summary: free text checked, then the closed shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ccdp.disclosure.refusals import Refusal
from ccdp.errors import CcdpError
from ccdp.wire.case_summary import CaseSummary, text_problem

# the summary's free-text fields (wire/case_summary.py); every other field is coded or numeric
CASE_TEXT = frozenset({"label", "agent", "protocol", "marker", "value", "unit", "stage"})
CASE_TEXT_TOO = frozenset({"risk_group", "trial", "arm"})


class CaseWithheld(Refusal):
    """The case summary cannot leave in the accepted shape (a coded value the model does not
    know): nothing of it is sent."""

    def __init__(self, where: str) -> None:
        self.rule, self.term = "case_shape", where
        CcdpError.__init__(self, f"the case summary does not fit its shape at {where}")


@dataclass
class CheckedCase:
    """A case summary that may go to the board, and what the gate withheld from it."""

    summary: Any  # ccdp.wire.case_summary.CaseSummary
    withheld: list[str] = field(default_factory=list)


def _case_text(value: str, keys: list[str]) -> str | None:
    problem = text_problem(value)
    if problem is None and any(k.casefold() in value.casefold() for k in keys):
        problem = "free text may not hold a record key"
    return problem


def release_case(raw: dict[str, Any], identifiers: list[str]) -> CheckedCase:
    """The releasable form of one child's case summary (docs/referrals.md): every free-text
    value that breaks a rule of `text_problem`, or holds one of the child's record keys
    (`identifiers`: source and pseudonymised keys), is withheld, a marker without its name
    dropped; then the summary must fit `CaseSummary`, whose shape admits no key and no date.
    It still waits for its custodian's release: the gate cannot read a name in free text."""
    keys = sorted({k for k in identifiers if k and len(k) >= 3}, key=len, reverse=True)
    withheld: list[str] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                where = f"{path}.{k}" if path else k
                if isinstance(v, str) and k in CASE_TEXT | CASE_TEXT_TOO:
                    problem = _case_text(v, keys)
                    if problem:
                        withheld.append(f"{where}: {problem}")
                        v = None
                out[k] = walk(v, where)
            return out
        if isinstance(node, list):
            items = [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
            return [i for i in items if not (isinstance(i, dict) and i.get("marker", "") is None)]
        return node

    cleaned = walk(raw, "")
    cleaned["withheld"] = len(withheld)
    try:
        summary = CaseSummary.model_validate(cleaned)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CaseWithheld(".".join(map(str, err["loc"]))) from None
    return CheckedCase(summary, withheld)

"""The one gate for what leaves a node: summaries, refusals and errors.

Whatever analysis produced it, a summary leaves only through `release`, which judges each part by
its kind and by the records it counts (node-side `Records`, which every part must declare):

* counts: small cells (1 to min_cell - 1, and zeros under `zero_cells: suppress`) and cells whose
  record set differs from an earlier released set by 1 to threshold - 1 records (the ledger) are
  suppressed, then secondary suppression protects them; suppressed cells are listed with their
  labels only when every label comes from the variable's declared level set, else only counted;
  a table needs a cohort of `min_cohort` records;
* event-time tables: a cohort of `min_cohort` records, the node's time grid, groups of fewer
  than min_group/min_cell subjects withheld, every row describing at least min_cell subjects,
  no row or group set close to an earlier release;
* model sums: min_cohort records, at most `max_params_ratio` x n parameters, every level of every
  categorical term holding min_cell records, the model's record set not close to an earlier one.

Released sets are then recorded in the ledger. A refusal carries the rule that refused and the
term it concerns (a variable or part name from the request), never a value of the store: not a
count, a level, a date or the size of a difference. `public_reason` turns any exception raised
while a node answers into what may be sent; the node's own log keeps the full detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import ValidationError

from ccdp.cohort.view import declared_levels
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.policy import TIME_UNIT_DAYS
from ccdp.disclosure.suppress import suppress
from ccdp.errors import CcdpError, SpecError
from ccdp.wire.errors import InsufficientData
from ccdp.wire.summary import GROUP, AggregatePart, CountsPart, EventTimesPart, Summary

MAX_CELLS = 20_000  # the largest dense grid of one count table a node lays out

# A node with no eligible patients answers exactly as one with too few (1 to min_cohort - 1):
# telling the two apart would say that a rare child exists there. Reports and the CLI read this
# prefix to label such a node; it is the one definition of the phrase.
TOO_FEW = "no eligible patients, or too few to report"

# What a refusal says, by rule: filled only with the policy's thresholds and a `term` that the
# request itself named (a variable, an analysis, a part), so no store value can ride along.
REASONS: dict[str, str] = {
    "allowed_analyses": "this node does not answer {term!r} analyses",
    "min_cohort": TOO_FEW + ": the cohort at this node is smaller than its minimum cohort size "
    "({min_cohort})",
    "max_params": "{term}: the model has more parameters than this node allows "
    "({max_params_ratio:.3g} x the records it uses)",
    "model_levels": "{term}: a level of this term holds fewer than {min_cell} records at this "
    "node; merge its levels or leave the term out",
    "undeclared": "{term}: the part does not declare the records it counts; nothing undeclared "
    "leaves a node",
    "unknown_part": "{term}: unknown kind of summary part; nothing unknown leaves a node",
    "event_times_forbidden": "this node does not release event-time tables",
    "time_grid": "event times on a {term} grid; this node releases them on a {event_times} grid "
    "or coarser (set time_unit: {event_times})",
    "event_rows": "{term}: an event-time row would describe fewer than {min_cell} subjects",
    "differencing": "{term}: the answer would differ from an earlier release of this node by "
    "fewer than {threshold} records (differencing rule)",
    "too_many_cells": "{term}: the table would have more than {max_cells} cells",
    # governance (governance/node_projects.py): the terms the node's custodian accepted
    "not_accepted": "not accepted: project {term} is not accepted at this node",
    "project_terms": "not accepted: project {term}: the task is outside the terms this node "
    "accepted",
    "project_expired": "not accepted: project {term} expired on {expires} at this node",
    "no_project": "not accepted: this node answers only tasks of a project its custodian accepted",
    # randomisation (clinical/enrol.py): what a trial may learn of a patient
    "trial_not_accepted": "not accepted: this node's custodian has not accepted trial {term!r} "
    "for randomisation (the node policy's `trials` lists those it randomises into)",
    "strata": "{term}: this node sends only categorical view variables as a trial's strata, "
    "with a value of the variable's levels (or short plain text); nothing else leaves for a "
    "randomisation",
}


class Refusal(CcdpError):
    """The node will not release this answer; `rule` says which rule refused, `term` what it
    concerns. The message is built from REASONS only, so it is safe to send."""

    def __init__(self, rule: str, term: str | None = None, **policy: Any) -> None:
        self.rule, self.term = rule, term
        values = {"term": term or "", "max_cells": MAX_CELLS, **policy}
        super().__init__(REASONS[rule].format(**values))


@dataclass
class Checked:
    """A summary that may leave the node, with notes on what was withheld (counts only)."""

    summary: Summary
    notes: list[str] = field(default_factory=list)
    sets: list[np.ndarray] = field(default_factory=list, repr=False)


def too_few(ctx: DisclosureContext) -> Refusal:
    """The refusal of a cohort below min_cohort, empty ones included (see TOO_FEW)."""
    return _refuse(ctx, "min_cohort")


def _refuse(ctx: DisclosureContext, rule: str, term: str | None = None) -> Refusal:
    p = ctx.policy
    return Refusal(
        rule,
        term,
        min_cohort=p.min_cohort,
        min_cell=p.min_cell,
        max_params_ratio=p.max_params_ratio,
        event_times=p.event_times,
        threshold=ctx.threshold,
    )


# -- models ----------------------------------------------------------------------------------
def _aggregate(name: str, part: AggregatePart, ctx: DisclosureContext) -> list[np.ndarray]:
    policy = ctx.policy
    if part.records is None or part.levels is None:
        raise _refuse(ctx, "undeclared", name)
    members = part.records.union()
    if members.size != part.n:
        raise _refuse(ctx, "undeclared", name)
    if part.n < policy.min_cohort:
        raise _refuse(ctx, "min_cohort")
    if part.n_params > part.n * policy.max_params_ratio:
        raise _refuse(ctx, "max_params", name)
    for term, counts in part.levels.items():
        if any(0 < k < policy.min_cell for k in counts):
            raise _refuse(ctx, "model_levels", term)
    if ctx.ledger.refused([members], ctx.threshold).any():
        raise _refuse(ctx, "differencing", name)
    return [members]


# -- event-time tables -------------------------------------------------------------------------
def _event_times(
    name: str, part: EventTimesPart, ctx: DisclosureContext
) -> tuple[EventTimesPart, list[str], list[np.ndarray]]:
    policy = ctx.policy
    if policy.event_times == "forbid":
        raise _refuse(ctx, "event_times_forbidden")
    if part.records is None:
        raise _refuse(ctx, "undeclared", name)
    if part.records.union().size < policy.min_cohort:
        raise _refuse(ctx, "min_cohort")  # as a table or model would be (TOO_FEW)
    unit = part.time_unit
    if unit not in TIME_UNIT_DAYS or TIME_UNIT_DAYS[unit] < TIME_UNIT_DAYS[policy.event_times]:
        raise _refuse(ctx, "time_grid", unit if unit in TIME_UNIT_DAYS else "unknown")
    smallest = max(policy.min_group, policy.min_cell)
    small = {k for k, n in part.group_sizes.items() if n < smallest}
    notes = []
    if small:
        keep = ~np.isin(part.columns[GROUP], sorted(small))
        sizes = {k: n for k, n in part.group_sizes.items() if k not in small}
        part = replace(part.take(keep), group_sizes=sizes)
        notes.append(f"{name}: {len(small)} group(s) of fewer than {smallest} subjects withheld")
    assert part.records is not None
    rows = part.records.sets(len(part))
    if any(r.size < policy.min_cell for r in rows):
        raise _refuse(ctx, "event_rows", name)
    groups = _group_sets(name, part, rows, ctx)
    # a group any of whose sets lies too close to an earlier release is withheld, as a small
    # group is: the rest of the table still answers
    labels = part.columns[GROUP]
    refused = ctx.ledger.refused(rows + list(groups.values()), ctx.threshold)
    close = {str(lab) for lab, r in zip(labels, refused[: len(rows)], strict=True) if r}
    close |= {g for g, r in zip(groups, refused[len(rows) :], strict=True) if r}
    if close:
        keep = ~np.isin(labels, sorted(close))
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
        groups = {g: m for g, m in groups.items() if g not in close}
        sizes = {k: n for k, n in part.group_sizes.items() if k not in close}
        part = replace(part.take(keep), group_sizes=sizes)
        notes.append(f"{name}: {len(close)} group(s) withheld by the differencing rule")
    sets = rows + list(groups.values())
    return part, notes, sets


def _group_sets(
    name: str, part: EventTimesPart, rows: list[np.ndarray], ctx: DisclosureContext
) -> dict[str, np.ndarray]:
    """Each group's record set (its size is released as the group's n), checked against it."""
    assert part.records is not None
    names = list(part.group_sizes)
    index = {g: i for i, g in enumerate(names)}
    of_row = np.array([index.get(str(g), -1) for g in part.columns[GROUP]], dtype=np.int64)
    sets = part.records.remap(of_row).sets(len(names))
    if any(s.size != part.group_sizes[g] for g, s in zip(names, sets, strict=True)):
        raise _refuse(ctx, "undeclared", name)
    return dict(zip(names, sets, strict=True))


# -- count tables ------------------------------------------------------------------------------
def _cell_key(cell: dict[str, Any], dims: list[str]) -> tuple[tuple[str, Any], ...]:
    return tuple((type(cell.get(d)).__name__, cell.get(d)) for d in dims)


def _declared(dims: list[str], cell: dict[str, Any]) -> bool:
    """Every label of the cell comes from its variable's declared level set."""
    for d in dims:
        levels = declared_levels(d)
        if levels is None or str(cell.get(d)) not in levels:
            return False
    return True


def _by_owner(part: CountsPart) -> bool:
    """Whether the part counts records judged by their owners (specimens by their children)."""
    return part.records is not None and part.records.by_owner


def _count_sets(
    parts: dict[str, CountsPart], ctx: DisclosureContext
) -> dict[str, list[np.ndarray]]:
    """Each counted part's cell sets, checked against the counts the part states."""
    out: dict[str, list[np.ndarray]] = {}
    for name, part in parts.items():
        if not part.counts:
            continue  # values that count no records (denominators from the population table)
        if part.records is None:
            raise _refuse(ctx, "undeclared", name)
        sets = part.records.sets(len(part.cells))
        if len(part.counts) == 1:
            col = part.counts[0]
            # the sets' sizes, except where samples are counted and children judged
            sizes = (
                part.records.sizes(len(part.cells))
                if part.records.by_owner
                else [x.size for x in sets]
            )
            if any(int(c.get(col) or 0) != n for c, n in zip(part.cells, sizes, strict=True)):
                raise _refuse(ctx, "undeclared", name)
        elif part.records.by_owner:
            raise _refuse(ctx, "undeclared", name)  # one count per cell when judged by owner
        levels = [len({_cell_key(c, [d]) for c in part.cells}) for d in part.dims]
        if math.prod(levels) > MAX_CELLS:
            raise _refuse(ctx, "too_many_cells", name)
        out[name] = sets
    return out


def _threshold(part: CountsPart, ctx: DisclosureContext) -> int:
    """The differencing threshold in the part's key space: two contributor keys per child for
    records judged by owner (Records.by_owner), so twice the threshold in children."""
    return ctx.threshold * (2 if _by_owner(part) else 1)


def _within_answer(
    parts: dict[str, CountsPart],
    sets: dict[str, list[np.ndarray]],
    forced: dict[str, np.ndarray],
    ctx: DisclosureContext,
) -> None:
    """Cells of one answer that lie within a few records of one another (a cell and the margin
    around it: their difference is the few children in the other cells) are suppressed too.
    Totals and margins are kept first, then larger cells; the linear audit of `suppress` then
    protects what was suppressed here, as it protects small cells. Parts judged by owner are
    compared among themselves, in children."""
    if ctx.threshold <= 1:
        return
    for family in (False, True):
        names = [n for n in sets if _by_owner(parts[n]) == family]
        floor = ctx.policy.min_cell * (2 if family else 1)
        order = sorted(
            (len(parts[name].dims), -s.size, name, i)
            for name in names
            for i, s in enumerate(sets[name])
            if s.size >= floor and not forced[name][i]
        )
        kept = Ledger()
        for _, _, name, i in order:
            members = sets[name][i]
            if kept.refused([members], _threshold(parts[name], ctx))[0]:
                forced[name][i] = True
            else:
                kept.record([members], {})
        kept.close()


def _owner_sets(parts: dict[str, CountsPart]) -> dict[str, list[np.ndarray]]:
    """The owners (children) of each cell of the parts judged by owner."""
    return {
        name: part.records.owner_sets(len(part.cells))
        for name, part in parts.items()
        if part.records is not None and part.records.by_owner
    }


def _few_owners(
    n_cells: int, owners: list[np.ndarray] | None, ctx: DisclosureContext
) -> np.ndarray:
    """Cells of a part judged by owner whose records come from 1 to min_cell - 1 owners (one
    child's many samples are still one child's)."""
    if owners is None:
        return np.zeros(n_cells, dtype=bool)
    sizes = np.array([o.size for o in owners], dtype=np.int64)
    return (sizes > 0) & (sizes < ctx.policy.min_cell)


def _hidden_lines(
    parts: dict[str, CountsPart],
    owner_sets: dict[str, list[np.ndarray]],
    released: dict[str, CountsPart],
    forced: dict[str, np.ndarray],
    ctx: DisclosureContext,
) -> bool:
    """Force one more cell where the suppressed cells of a line (the cells of a part that
    share every label but one) of a part judged by owner come from 1 to min_cell - 1 owners:
    their sum (the line's margin less its released cells) would describe those few children.
    Returns whether a cell was forced, so that suppression runs again."""
    for name, owners in owner_sets.items():
        part = parts[name]
        if not part.dims:
            continue
        index = {_cell_key(c, part.dims): i for i, c in enumerate(part.cells)}
        hidden = {  # listed cells only: a cell suppress() added is an empty one
            index.get(_cell_key(c, part.dims), -1)
            for c in released[name].cells
            if any(c.get(k) is None for k in part.counts)
        }
        for d in range(len(part.dims)):
            lines: dict[tuple, list[int]] = {}
            for i, c in enumerate(part.cells):
                rest = tuple(k for j, k in enumerate(_cell_key(c, part.dims)) if j != d)
                lines.setdefault(rest, []).append(i)
            for cells in lines.values():
                gone = [i for i in cells if i in hidden]
                shown = [i for i in cells if i not in hidden and not forced[name][i]]
                if not gone or not shown:
                    continue
                n = np.unique(np.concatenate([owners[i] for i in gone])).size
                if 0 < n < ctx.policy.min_cell:
                    count = part.counts[0]
                    smallest = min(shown, key=lambda i: int(part.cells[i].get(count) or 0))
                    forced[name][smallest] = True
                    return True
    return False


def _counts(
    parts: dict[str, CountsPart], ctx: DisclosureContext
) -> tuple[dict[str, CountsPart], list[str], list[np.ndarray]]:
    policy = ctx.policy
    sets = _count_sets(parts, ctx)
    owner_sets = _owner_sets(parts)
    # the cohort: records, or the children of records judged by owner
    cohort = [s for name, cells in sets.items() for s in owner_sets.get(name, cells)]
    # an empty table is refused like a small one (TOO_FEW): zero must not read differently
    if sets and (np.unique(np.concatenate(cohort)).size if cohort else 0) < policy.min_cohort:
        raise _refuse(ctx, "min_cohort")
    few = {name: _few_owners(len(parts[name].cells), owner_sets.get(name), ctx) for name in sets}
    forced = {
        name: (
            ctx.ledger.refused(cells, _threshold(parts[name], ctx))
            if cells
            else np.zeros(0, dtype=bool)
        )
        | few[name]
        for name, cells in sets.items()
    }
    _within_answer(parts, sets, forced, ctx)
    # why a cell was suppressed is not said where it would tell a large count of few children
    refused = int(sum((forced[n] & ~few[n]).sum() for n in forced))
    released, report = suppress(parts, policy.min_cell, policy.zero_cells, forced=forced)
    for _ in range(sum(len(p.cells) for p in parts.values())):
        if not _hidden_lines(parts, owner_sets, released, forced, ctx):
            break
        released, report = suppress(parts, policy.min_cell, policy.zero_cells, forced=forced)
    notes: list[str] = []
    withheld = 0
    recorded: list[np.ndarray] = []
    out: dict[str, CountsPart] = {}
    for name, part in released.items():
        by_key = {
            _cell_key(c, parts[name].dims): s
            for c, s in zip(parts[name].cells, sets.get(name, []), strict=False)
        }
        cells = []
        dropped = 0
        for cell in part.cells:
            hidden = any(cell.get(c) is None for c in part.counts)
            if hidden and not _declared(part.dims, cell):
                dropped += 1
                continue
            if not hidden and name in sets:
                recorded.append(by_key.get(_cell_key(cell, part.dims), np.zeros(0, np.uint64)))
            cells.append(cell)
        withheld += dropped
        out[name] = replace(part, cells=cells, withheld=part.withheld + dropped, records=None)
    if report.total:
        notes.append(
            f"{report.total} cell(s) suppressed ({sum(report.primary.values())} below "
            f"{policy.min_cell} or too close to an earlier release, "
            f"{sum(report.secondary.values())} to protect them)"
            + (f", {withheld} of them not listed" if withheld else "")
        )
    if refused:
        notes.append("some cells were suppressed by the differencing rule")
    if report.unprotectable:
        notes.append(
            f"{report.unprotectable} suppressed cell(s) equal a margin that a coarser query "
            "would itself suppress"
        )
    return out, notes, recorded


# -- the gate ----------------------------------------------------------------------------------
def release(summary: Summary, ctx: DisclosureContext) -> Checked:
    """The releasable form of `summary` under the node's policy and ledger, or Refusal."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    sets: list[np.ndarray] = []
    counts: dict[str, CountsPart] = {}
    for name, part in summary.parts.items():
        if isinstance(part, AggregatePart):
            sets += _aggregate(name, part, ctx)
            out[name] = part
        elif isinstance(part, EventTimesPart):
            out[name], more, part_sets = _event_times(name, part, ctx)
            notes += more
            sets += part_sets
        elif isinstance(part, CountsPart):
            counts[name] = part
        else:
            raise _refuse(ctx, "unknown_part", name)
    if counts:
        released, more, count_sets = _counts(counts, ctx)
        out.update(released)
        notes += more
        sets += count_sets
    return Checked(Summary(parts={n: out[n] for n in summary.parts}), notes, sets)


# -- the count of patients consent excluded ----------------------------------------------------
def release_excluded(members: np.ndarray, ctx: DisclosureContext) -> tuple[str, list[np.ndarray]]:
    """The note saying how many of the cohort's patients their consent excluded (a project's
    data use), judged as one count cell: 1 to min_cell - 1 (and zero under `zero_cells:
    suppress`) is withheld, as is a set within the differencing threshold of an earlier release
    (the same children counted with and without a data use must not be told apart). Returns the
    note and the set to record with the answer (empty when the count is withheld or zero)."""
    policy, n = ctx.policy, int(members.size)
    head = "consent: patients of this cohort excluded by their consent (DUO)"
    # one wording for both reasons: which rule withheld it would bound the count
    withheld = f"{head}: withheld (a small count, or too close to an earlier release)"
    if n == 0:
        return (withheld, []) if policy.zero_cells == "suppress" else (f"{head}: 0", [])
    if n < policy.min_cell or ctx.ledger.refused([members], ctx.threshold)[0]:
        return withheld, []
    return f"{head}: {n}", [members]


# -- a patient's strata for a trial's randomisation -------------------------------------------
MAX_STRATA = 6


def check_strata(names: list[str]) -> None:
    """Refuse a trial's strata that are not categorical view variables (or too many), before
    the node reads a value (see `release_strata`)."""
    from ccdp.cohort.view import view_variables

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
    from ccdp.wire.case_summary import text_problem

    check_strata(list(strata))
    for name, value in strata.items():
        levels = declared_levels(name)
        ok = value in levels if levels is not None else text_problem(value) is None
        if not ok or len(value) > 40:
            raise Refusal("strata", name)
    return dict(strata)


# -- a case summary for an expert board ---------------------------------------------------------
# the summary's free-text fields (clinical/case_summary.py); every other field is coded or numeric
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
    from ccdp.wire.case_summary import text_problem

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
    from ccdp.wire.case_summary import CaseSummary

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


def record(checked: Checked, ctx: DisclosureContext, meta: dict[str, Any]) -> None:
    """Remember what was released (call once the answer is on its way, not before)."""
    ctx.ledger.record(checked.sets, meta)


# -- what a refusal or error may say -------------------------------------------------------------
SPEC_ERRORS = (SpecError, ValidationError)


def public_reason(exc: BaseException, node: str, data_read: bool) -> tuple[str, str]:
    """(status, reason) that may leave the node for an exception raised while answering.

    Before the node reads its data, errors concern only the request (its spec, parameters,
    the analysis asked) and are sent as they are. After, only the gate's own refusals speak; any
    other error is named by its kind, since its text may quote stored values."""
    if isinstance(exc, Refusal):
        return "refused", str(exc)
    if not data_read:
        if isinstance(exc, ValidationError):
            from ccdp.specfile import first_error

            return "failed", f"invalid parameters: {first_error(exc)}"
        if isinstance(exc, CcdpError):
            return "failed", str(exc)
    if isinstance(exc, InsufficientData):
        return "refused", "the cohort at this node cannot support this request (insufficient data)"
    if isinstance(exc, CcdpError):
        return "failed", (
            f"the analysis could not be computed on the data of node {node} "
            f"({type(exc).__name__}); its operator can read the detail in the node's log"
        )
    return "failed", f"internal error at node {node} ({type(exc).__name__})"


__all__ = [
    "TOO_FEW",
    "CaseWithheld",
    "Checked",
    "CheckedCase",
    "Refusal",
    "check_strata",
    "public_reason",
    "record",
    "release",
    "release_case",
    "release_excluded",
    "release_strata",
    "too_few",
]

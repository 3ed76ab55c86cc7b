"""The one gate for what leaves a node: summaries, refusals and errors.

Whatever analysis produced it, a summary leaves only through `release`, which judges each part by
its kind and by the records it counts (node-side `Records`, which every part must declare):

* counts, under `counts: exact`: small cells (1 to min_cell - 1, and zeros under
  `zero_cells: suppress`) and cells whose record set differs from an earlier released set by 1
  to threshold - 1 records (the ledger) are suppressed, then secondary suppression protects
  them; suppressed cells are listed with their labels only when every label comes from the
  variable's declared level set, else only counted; a table needs a cohort of `min_cohort`
  records. Under `counts: perturbed` (the feasibility tier): every cell, margin and total is
  published with cell-key noise of at most `max_noise`, never 1 to min_cell - 1
  (disclosure.perturb), and nothing is suppressed or refused because of the data. A registered
  study's counts (`DisclosureContext.registered`) are exact under either policy;
* event-time tables: a cohort of `min_cohort` records, the node's time grid, groups of fewer
  than min_group/min_cell subjects withheld, every row describing at least min_cell subjects,
  no row or group set close to an earlier release. A registered study's rows come at the
  policy's resolution (a published curve: the custodian audited them at acceptance), so only
  its groups are held to the size and differencing rules;
* model sums: min_cohort records, at most `max_params_ratio` x n parameters, every level of every
  categorical term holding min_cell records, the model's record set not close to an earlier one.

Released sets are then recorded in the ledger. A refusal carries the rule that refused and the
term it concerns (a variable or part name from the request), never a value of the store: not a
count, a level, a date or the size of a difference (ccdp.disclosure.refusals). The node's other
ways out have gates of their own beside this one: the consent note (consent_note.py), a trial's
strata (strata.py) and an expert board's case summary (case.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ccdp.cohort.view import declared_levels
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.ledger import digest, symmetric_difference
from ccdp.disclosure.perturb import cell_keys, perturb_counts
from ccdp.disclosure.policy import TIME_UNIT_DAYS
from ccdp.disclosure.refusals import MAX_CELLS, refuse
from ccdp.disclosure.suppress import suppress
from ccdp.wire.summary import GROUP, AggregatePart, CountsPart, EventTimesPart, Summary


@dataclass
class Checked:
    """A summary that may leave the node, with notes on what was withheld (counts only)."""

    summary: Summary
    notes: list[str] = field(default_factory=list)
    sets: list[np.ndarray] = field(default_factory=list, repr=False)


# -- models ----------------------------------------------------------------------------------
def _aggregate(name: str, part: AggregatePart, ctx: DisclosureContext) -> list[np.ndarray]:
    policy = ctx.policy
    if part.records is None or part.levels is None:
        raise refuse(ctx, "undeclared", name)
    members = part.records.union()
    if members.size != part.n:
        raise refuse(ctx, "undeclared", name)
    if part.n < policy.min_cohort:
        raise refuse(ctx, "min_cohort")
    if part.n_params > part.n * policy.max_params_ratio:
        raise refuse(ctx, "max_params", name)
    for term, counts in part.levels.items():
        if any(0 < k < policy.min_cell for k in counts):
            raise refuse(ctx, "model_levels", term)
    if ctx.ledger.refused([members], ctx.threshold).any():
        raise refuse(ctx, "differencing", name)
    return [members]


# -- event-time tables -------------------------------------------------------------------------
def _event_times(
    name: str, part: EventTimesPart, ctx: DisclosureContext
) -> tuple[EventTimesPart, list[str], list[np.ndarray]]:
    policy = ctx.policy
    if policy.event_times == "forbid":
        raise refuse(ctx, "event_times_forbidden")
    if part.records is None:
        raise refuse(ctx, "undeclared", name)
    if part.records.union().size < policy.min_cohort:
        raise refuse(ctx, "min_cohort")  # as a table or model would be (TOO_FEW)
    unit = part.time_unit
    if unit not in TIME_UNIT_DAYS or TIME_UNIT_DAYS[unit] < TIME_UNIT_DAYS[policy.event_times]:
        raise refuse(ctx, "time_grid", unit if unit in TIME_UNIT_DAYS else "unknown")
    smallest = max(policy.min_group, policy.min_cell)
    small = {k for k, n in part.group_sizes.items() if n < smallest}
    notes = []
    if small:
        keep = ~np.isin(part.columns[GROUP], sorted(small))
        sizes = {k: n for k, n in part.group_sizes.items() if k not in small}
        part = replace(part.take(keep), group_sizes=sizes)
        notes.append(f"{name}: {len(small)} group(s) of fewer than {smallest} subjects withheld")
    # a registered study's rows come at the policy's resolution: only its groups are compared
    rows = [] if ctx.registered else _checked_rows(name, part, ctx)
    groups = _group_sets(name, part, ctx)
    # a group any of whose sets lies too close to an earlier release is withheld, as a small
    # group is: the rest of the table still answers
    close = _close_to_earlier(part.columns[GROUP], rows, groups, ctx)
    if close:
        keep = ~np.isin(part.columns[GROUP], sorted(close))
        if rows:
            rows = [r for r, k in zip(rows, keep, strict=True) if k]
        groups = {g: m for g, m in groups.items() if g not in close}
        sizes = {k: n for k, n in part.group_sizes.items() if k not in close}
        part = replace(part.take(keep), group_sizes=sizes)
        notes.append(f"{name}: {len(close)} group(s) withheld by the differencing rule")
    return part, notes, rows + list(groups.values())


def _checked_rows(name: str, part: EventTimesPart, ctx: DisclosureContext) -> list[np.ndarray]:
    """An unregistered table's rows: each line's record set, none smaller than `min_cell`."""
    assert part.records is not None
    rows = part.records.sets(len(part))
    if any(r.size < ctx.policy.min_cell for r in rows):
        raise refuse(ctx, "event_rows", name)
    return rows


def _close_to_earlier(
    labels: np.ndarray,
    rows: list[np.ndarray],
    groups: dict[str, np.ndarray],
    ctx: DisclosureContext,
) -> set[str]:
    """The groups with a line (labelled by its group) or a whole-group set within the
    differencing threshold of an earlier release."""
    refused = ctx.ledger.refused(rows + list(groups.values()), ctx.threshold)
    close = {g for g, r in zip(groups, refused[len(rows) :], strict=True) if r}
    if rows:
        close |= {str(lab) for lab, r in zip(labels, refused[: len(rows)], strict=True) if r}
    return close


def _group_sets(name: str, part: EventTimesPart, ctx: DisclosureContext) -> dict[str, np.ndarray]:
    """Each group's record set (its size is released as the group's n), checked against it."""
    assert part.records is not None
    names = list(part.group_sizes)
    index = {g: i for i, g in enumerate(names)}
    of_row = np.array([index.get(str(g), -1) for g in part.columns[GROUP]], dtype=np.int64)
    sets = part.records.remap(of_row).sets(len(names))
    if any(s.size != part.group_sizes[g] for g, s in zip(names, sets, strict=True)):
        raise refuse(ctx, "undeclared", name)
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
            raise refuse(ctx, "undeclared", name)
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
                raise refuse(ctx, "undeclared", name)
        elif part.records.by_owner:
            raise refuse(ctx, "undeclared", name)  # one count per cell when judged by owner
        levels = [len({_cell_key(c, [d]) for c in part.cells}) for d in part.dims]
        if math.prod(levels) > MAX_CELLS:
            raise refuse(ctx, "too_many_cells", name)
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
        kept = _Kept()
        for _, _, name, i in order:
            members = sets[name][i]
            if kept.refused(members, _threshold(parts[name], ctx)):
                forced[name][i] = True
            else:
                kept.keep(members)


class _Kept:
    """The sets one answer keeps, under the ledger's rule (`Ledger.refused`): a set is refused
    when 1 to `threshold - 1` records from a kept one, unless the very same set was kept. In
    memory: an answer compares a dozen sets, for which an in-memory SQLite ledger (its schema,
    key numbering and packed sets) cost more than the comparisons. The size and sketch tests
    the ledger uses to skip far sets are not needed to decide: each is a lower bound of the
    symmetric difference, so the exact comparison of every kept set decides the same."""

    def __init__(self) -> None:
        self.sets: list[np.ndarray] = []
        self.digests: set[bytes] = set()

    def refused(self, members: np.ndarray, threshold: int) -> bool:
        """`members`: sorted distinct keys (`Records.sets`), as the ledger takes them."""
        if threshold <= 1 or digest(members) in self.digests:
            return False
        return any(
            0 < symmetric_difference(members, kept) < threshold
            for kept in self.sets
            if abs(kept.size - members.size) < threshold
        )

    def keep(self, members: np.ndarray) -> None:
        d = digest(members)
        if d not in self.digests:
            self.digests.add(d)
            self.sets.append(members)


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


def perturbed_note(max_noise: int, min_cell: int) -> str:
    """What a perturbed answer says of itself (the one wording, shown with the result)."""
    return (
        f"perturbed: each count has noise of at most ±{max_noise} (cell-key method); "
        f"no value between 1 and {min_cell - 1}"
    )


def _perturbed(
    parts: dict[str, CountsPart], ctx: DisclosureContext
) -> tuple[dict[str, CountsPart], list[str], list[np.ndarray]]:
    """Every count, margin and total published as its cell-key perturbed value: no cell is
    suppressed and no set refused because of what the data hold, so the decision to release
    says nothing (the "denials leak" of query auditing). A cell is keyed by its set of records;
    a part judged by owner (specimens) by its distinct owners (children), while its count of
    samples is what is perturbed: the same children give the same noise whatever samples they
    add, and the value is never 1 to min_cell - 1 samples. A cell published as 0 is not listed,
    like a cell with no records, so that a listed zero never says "some records, perturbed
    away"; under `zero_cells: suppress` a published total of 0 is suppressed."""
    policy = ctx.policy
    summed = {n: p for n, p in parts.items() if p.records is not None and p.records.summed}
    sets = _count_sets({n: p for n, p in parts.items() if n not in summed}, ctx)
    owner_sets = _owner_sets(parts)
    noise, min_cell = policy.noise, policy.min_cell
    out: dict[str, CountsPart] = {}
    recorded: list[np.ndarray] = []
    for name, part in parts.items():
        if name not in sets and name not in summed:  # values that count no records
            out[name] = replace(part, records=None)
            continue
        if len(part.counts) != 1:
            raise refuse(ctx, "undeclared", name)  # one count, one set per cell to key
        col = part.counts[0]
        true = np.array([int(c.get(col) or 0) for c in part.cells], dtype=np.int64)
        members: list[np.ndarray | None]
        if name in summed:
            keys = _summed_keys(name, part, true, ctx)
            members = [None] * len(part.cells)  # no sets: nothing for the ledger
        else:
            keys = cell_keys(owner_sets.get(name, sets[name]), ctx.salt)
            members = list(sets[name])
        shown = perturb_counts(true, keys, noise, min_cell)
        cells = []
        for cell, value, member in zip(part.cells, shown, members, strict=True):
            if value == 0 and part.dims:
                continue
            n = None if value == 0 and policy.zero_cells == "suppress" else int(value)
            cells.append({**cell, col: n})
            if member is not None:
                recorded.append(member)
        out[name] = replace(part, cells=cells, records=None, noise=noise)
    return out, [perturbed_note(noise, min_cell)], recorded


def _summed_keys(
    name: str, part: CountsPart, true: np.ndarray, ctx: DisclosureContext
) -> np.ndarray:
    """The cell keys of a part described by its sums (`Records.summed`, one aggregate at the
    node), after the checks `_count_sets` makes of sets: the stated counts are the records'
    sizes, the keys use this node's salt, and the table is not too large."""
    assert part.records is not None and part.records.summed is not None
    summed = part.records.summed
    if (
        summed.salt != ctx.salt
        or summed.sizes.shape != true.shape
        or not np.array_equal(summed.sizes, true)
    ):
        raise refuse(ctx, "undeclared", name)
    levels = [len({_cell_key(c, [d]) for c in part.cells}) for d in part.dims]
    if math.prod(levels) > MAX_CELLS:
        raise refuse(ctx, "too_many_cells", name)
    return summed.cell_keys


def _counts(
    parts: dict[str, CountsPart], ctx: DisclosureContext
) -> tuple[dict[str, CountsPart], list[str], list[np.ndarray]]:
    policy = ctx.policy
    if ctx.perturbs:
        return _perturbed(parts, ctx)
    sets = _count_sets(parts, ctx)
    owner_sets = _owner_sets(parts)
    # the cohort: records, or the children of records judged by owner
    cohort = [s for name, cells in sets.items() for s in owner_sets.get(name, cells)]
    # an empty table is refused like a small one (TOO_FEW): zero must not read differently
    if sets and (np.unique(np.concatenate(cohort)).size if cohort else 0) < policy.min_cohort:
        raise refuse(ctx, "min_cohort")
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
            raise refuse(ctx, "unknown_part", name)
    if counts:
        released, more, count_sets = _counts(counts, ctx)
        out.update(released)
        notes += more
        sets += count_sets
    return Checked(Summary(parts={n: out[n] for n in summary.parts}), notes, sets)


def record(checked: Checked, ctx: DisclosureContext, meta: dict[str, Any]) -> None:
    """Remember what was released (call once the answer is on its way, not before)."""
    ctx.ledger.record(checked.sets, meta)

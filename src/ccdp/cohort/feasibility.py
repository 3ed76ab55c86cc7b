"""What a feasibility count may ask (issue 28, design 2), checked from the request alone.

The feasibility tier (`count`/`crosstab` without registration, perturbed by cell key) is safe
only if the family of record sets a researcher can name is small and fixed: a perturbed answer
to a fixed set cannot be averaged, and two allowed sets must never differ by one rare level. So
its cohort filters and `by` take only categorical variables with declared levels; a filter is
one level, or a list (or a `{from, to}` range over a band) equal to a declared grouping of
`data/groupings.yaml`. Raw numbers, times and dates (bisection: issue 28 class 3), free text,
identifiers and ad-hoc level lists (differencing: class 1) are refused before any data is read,
so the refusal says nothing about the data. Rules and reasons: docs/feasibility.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import combinations, product
from typing import Any

import yaml

from ccdp.cohort.spec import CohortError, CohortSpec, Range
from ccdp.cohort.view import ViewVariable, declared_levels, view_variables

FEASIBILITY_ANALYSES = ("count", "crosstab")
"""The analyses of the feasibility tier (counts only; everything else is registered or reviewed)."""

MISSING = "(empty)"
"""The level name of an empty value (`null` in a filter): one level of its own, in no grouping."""

# Rule names: an error names one, so a researcher can look it up in docs/feasibility.md.
RULE_UNKNOWN = "view-variable"
RULE_IDENTIFIER = "identifier"
RULE_RAW = "band-only"
RULE_OPEN = "declared-levels"
RULE_RANGE = "range-whole-bands"
RULE_LIST = "declared-grouping"
RULE_ANALYSIS = "feasibility-analysis"


class FeasibilityError(CohortError):
    """A feasibility request uses a variable or a filter the tier does not allow. It names the
    variable and the rule, never a value: the decision is made without data."""

    def __init__(self, variable: str, rule: str, why: str, use: str = "cohort") -> None:
        self.variable = variable
        self.rule = rule
        where = variable if use == "cohort" else f"{use} {variable}"
        super().__init__(f"{where}: {why} (feasibility rule `{rule}`, docs/feasibility.md)")


@dataclass(frozen=True)
class Grouping:
    """One declared level list of a variable, with where it comes from."""

    variable: str
    name: str
    levels: frozenset[str]
    source: str
    label: str = ""


@cache
def _groupings_file() -> dict[str, Any]:
    text = resources.files("ccdp.cohort").joinpath("data/groupings.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@cache
def declared_groupings() -> dict[str, tuple[Grouping, ...]]:
    """Every declared grouping by variable: those built from the terminology tables and those
    listed by hand, each checked to be a list of at least two declared levels."""
    data = _groupings_file()
    out: dict[str, list[Grouping]] = {}
    for entry in data.get("from_tables", []):
        leave_out = set(entry.get("leave_out") or {})
        built = _from_table(entry["variable"], entry["rule"], entry["source"])
        if leave_out - {g.name for g in built}:  # a typo would silently keep a grouping
            raise CohortError(f"groupings.yaml: {entry['variable']} leaves out unknown groupings")
        out.setdefault(entry["variable"], []).extend(g for g in built if g.name not in leave_out)
    for entry in data.get("groupings", []):
        g = Grouping(
            variable=entry["variable"],
            name=str(entry["name"]),
            levels=frozenset(str(v) for v in entry["levels"]),
            source=entry["source"],
            label=entry.get("label", ""),
        )
        out.setdefault(g.variable, []).append(g)
    for name, groups in out.items():
        levels = declared_levels(name)
        if levels is None:
            raise CohortError(f"groupings.yaml: {name} has no declared levels to group")
        for g in groups:
            if len(g.levels) < 2 or not g.levels <= levels:
                raise CohortError(
                    f"groupings.yaml: {name} grouping {g.name!r} is not a list of at least two "
                    "of its declared levels"
                )
    return {name: tuple(groups) for name, groups in out.items()}


def _from_table(variable: str, rule: str, source: str) -> list[Grouping]:
    """Groupings that a code table already defines (so they are read, never retyped)."""
    if rule == "iccc_main_groups":
        from ccdp.terminology.iccc import EDITIONS, iccc_codes

        members: dict[str, set[str]] = {}
        labels: dict[str, str] = {}
        for edition in EDITIONS:
            codes = iccc_codes(edition)
            for group, sub, label in zip(
                codes["group"], codes["subgroup"], codes["group_label"], strict=True
            ):
                members.setdefault(str(group), set()).add(str(sub))
                labels[str(group)] = str(label)
        return [
            Grouping(variable, group, frozenset(subs), source, labels[group])
            for group, subs in members.items()
        ]
    if rule == "five_year_periods":
        periods = sorted(declared_levels("diagnosis_period") or ())
        known = declared_levels(variable) or frozenset()
        out = []
        for period in periods:
            lo, hi = (int(y) for y in period.split("-"))
            years = frozenset(str(y) for y in range(lo, hi + 1))
            if not years <= known:  # a period past the last declared year is not whole
                continue
            out.append(Grouping(variable, period, years, source, f"diagnosis {period}"))
        return out
    raise CohortError(f"groupings.yaml: unknown rule {rule!r} for {variable}")


@cache
def _ranged() -> frozenset[str]:
    """Variables whose levels are bands (a `band` of a raw variable, or years grouped into
    five-year periods): the only ones a `{from, to}` range may filter."""
    bands = {v.band for v in view_variables().values() if v.band}
    periods = {
        e["variable"]
        for e in _groupings_file().get("from_tables", [])
        if e["rule"] == "five_year_periods"
    }
    return frozenset(bands | periods)


def check_variable(name: str, use: str = "cohort") -> ViewVariable:
    """The view variable `name` if the feasibility tier may filter or group on it at all."""
    var = view_variables().get(name)
    if var is None:
        raise FeasibilityError(name, RULE_UNKNOWN, "not a variable of the analysis view", use)
    if var.identifier:
        raise FeasibilityError(name, RULE_IDENTIFIER, "an identifier never leaves the node", use)
    if var.var_class in ("numeric", "time", "date"):
        hint = f"use its band `{var.band}`" if var.band else "it has no declared band"
        raise FeasibilityError(
            name,
            RULE_RAW,
            f"a {var.var_class} variable is never used at full precision; {hint}",
            use,
        )
    if declared_levels(name) is None:
        raise FeasibilityError(
            name, RULE_OPEN, "its levels are free text, not declared in advance", use
        )
    return var


def _level(value: Any) -> str:
    return MISSING if value is None else str(value)


def _range_levels(var: ViewVariable, cond: Range) -> frozenset[str]:
    """The declared levels a range selects, compared as the compiled SQL compares them (text
    for text levels, so `{from: 1-4, to: 5-9}` of age_group selects 10-14 and 15-19 too)."""
    levels = declared_levels(var.name) or frozenset()
    numeric = var.type in ("integer", "float")

    def key(v: Any) -> Any:
        return float(v) if numeric else str(v)

    lo = None if cond.from_ is None else key(cond.from_)
    hi = None if cond.to is None else key(cond.to)
    return frozenset(
        lv for lv in levels if (lo is None or key(lv) >= lo) and (hi is None or key(lv) <= hi)
    )


def allowed_list(name: str, levels: frozenset[str]) -> bool:
    """Whether a set of levels may filter `name`: exactly one level, or a declared grouping."""
    if len(levels) == 1:
        return True
    return any(g.levels == levels for g in declared_groupings().get(name, ()))


def check_feasibility(cohort: Mapping[str, Any] | None, by: Iterable[str] = ()) -> None:
    """Refuse (FeasibilityError, naming the variable and the rule) a feasibility count whose
    cohort or `by` uses anything but declared levels, declared bands and declared groupings.

    Needs no data: the same request is always allowed or always refused."""
    spec = dict(cohort or {})
    for name in spec:
        check_variable(name)
    for name in by:
        check_variable(name, use="by")
    typed = CohortSpec.load(spec).root  # values in their declared spelling (`Male` -> male)
    variables = view_variables()
    for name, cond in typed.items():
        var = variables[name]
        if isinstance(cond, Range):
            if name not in _ranged():
                raise FeasibilityError(
                    name, RULE_RANGE, "a range filters only a band variable, over whole bands"
                )
            if not allowed_list(name, _range_levels(var, cond)):
                raise FeasibilityError(
                    name,
                    RULE_RANGE,
                    "the range selects bands that are neither one band nor a declared grouping",
                )
        elif isinstance(cond, list) and not allowed_list(name, frozenset(map(_level, cond))):
            raise FeasibilityError(
                name, RULE_LIST, "a list of levels must be one level or a declared grouping"
            )


def check_feasibility_study(
    analysis: str, cohort: Mapping[str, Any] | None, by: Iterable[str] = ()
) -> None:
    """The node's check of a feasibility-tier task (`count`/`crosstab`), before it opens its
    store. Not switched on by default: the node policy decides when a task is of this tier."""
    if analysis not in FEASIBILITY_ANALYSES:
        raise FeasibilityError(
            analysis,
            RULE_ANALYSIS,
            f"the feasibility tier answers only {' and '.join(FEASIBILITY_ANALYSES)}",
            "analysis",
        )
    check_feasibility(cohort, by)


# The static properties of the declared groupings (tests/cohort/test_feasibility.py): checked on
# the file, without data, so that no two allowed cohorts differ by a single level.


def one_level_differences(name: str) -> list[tuple[str, str]]:
    """Pairs (grouping, other) of `name` that differ by exactly one level, where other is another
    grouping, a single level, or a single level's complement (all levels but one)."""
    levels = declared_levels(name) or frozenset()
    groups = declared_groupings().get(name, ())
    others: list[tuple[str, frozenset[str]]] = [(g.name, g.levels) for g in groups]
    others += [(f"level {lv}", frozenset({lv})) for lv in sorted(levels)]
    others += [(f"all but {lv}", levels - {lv}) for lv in sorted(levels)]
    return [
        (g.name, label)
        for g in groups
        for label, other in others
        if other != g.levels and len(g.levels ^ other) == 1
    ]


def isolating_combinations(name: str, most: int = 3) -> list[tuple[str, ...]]:
    """Signed combinations (`+A`, `-B`, ...) of at most `most` distinct declared groupings of
    `name` whose counts add up to the count of exactly one level (brute force over the file)."""
    import numpy as np  # only for this static check, off the request path

    groups = declared_groupings().get(name, ())
    order = sorted(declared_levels(name) or ())
    index = {lv: i for i, lv in enumerate(order)}
    matrix = np.zeros((len(groups), len(order)), dtype=np.int8)
    for row, g in enumerate(groups):
        matrix[row, [index[lv] for lv in g.levels]] = 1
    found: list[tuple[str, ...]] = []
    for k in range(1, min(most, len(groups)) + 1):
        chosen = np.array(list(combinations(range(len(groups)), k)), dtype=np.intp)
        for signs in product((1, -1), repeat=k):
            total = np.einsum("k,ckn->cn", np.array(signs, dtype=np.int8), matrix[chosen])
            one = ((total == 0).sum(axis=1) == len(order) - 1) & ((total == 1).sum(axis=1) == 1)
            for combo in chosen[one]:
                found.append(
                    tuple(
                        f"{'+' if s > 0 else '-'}{groups[i].name}"
                        for s, i in zip(signs, combo, strict=True)
                    )
                )
    return found

"""What a feasibility count may ask (issue 28, design 2): every rule refuses one request and
allows another; the declared groupings keep their static properties; the bisection and the
level-list differencing of issue 28 are refused at the first query."""

from __future__ import annotations

from collections import Counter
from itertools import combinations, product

import pytest

from ccdp.cohort.feasibility import (
    RULE_ANALYSIS,
    RULE_IDENTIFIER,
    RULE_LIST,
    RULE_OPEN,
    RULE_RANGE,
    RULE_RAW,
    RULE_UNKNOWN,
    FeasibilityError,
    check_feasibility,
    check_feasibility_study,
    declared_groupings,
    isolating_combinations,
    one_level_differences,
)
from ccdp.cohort.spec import CohortError
from ccdp.cohort.view import declared_levels, view_variables

GROUP_I = ["Ia", "Ib", "Ic", "Id", "Ie"]


def _refused(cohort: dict | None, by: list[str] = (), *, variable: str, rule: str) -> str:
    with pytest.raises(FeasibilityError) as info:
        check_feasibility(cohort, by)
    assert info.value.rule == rule
    assert info.value.variable == variable.removeprefix("by ")
    message = str(info.value)
    assert message.startswith(f"{variable}: ") and f"`{rule}`" in message
    return message


# --- each rule: one request refused, one allowed ------------------------------------------------


@pytest.mark.parametrize(
    ("cohort", "by", "variable", "rule"),
    [
        ({"no_such_thing": 1}, [], "no_such_thing", RULE_UNKNOWN),
        ({"patient_id": "P1"}, [], "patient_id", RULE_IDENTIFIER),
        ({}, ["tumour_id"], "by tumour_id", RULE_IDENTIFIER),
        ({"age_years": 4}, [], "age_years", RULE_RAW),
        ({"age_at_diagnosis": {"from": 0, "to": 1}}, [], "age_at_diagnosis", RULE_RAW),
        ({"os_time": {"to": 365}}, [], "os_time", RULE_RAW),
        ({"diagnosis_date": {"from": "2010-01-01"}}, [], "diagnosis_date", RULE_RAW),
        ({"wbc_at_diagnosis": {"from": 50}}, [], "wbc_at_diagnosis", RULE_RAW),
        ({}, ["os_time"], "by os_time", RULE_RAW),
        ({}, ["efs_time"], "by efs_time", RULE_RAW),
        ({"stage": "IV"}, [], "stage", RULE_OPEN),
        ({"trial": "X"}, [], "trial", RULE_OPEN),
        ({}, ["risk_group"], "by risk_group", RULE_OPEN),
        ({}, ["node"], "by node", RULE_OPEN),
        ({"iccc_group": {"from": "I", "to": "III"}}, [], "iccc_group", RULE_RANGE),
        ({"diagnosis_year": {"from": 2005}}, [], "diagnosis_year", RULE_RANGE),
        ({"diagnosis_year": {"from": 2005, "to": 2012}}, [], "diagnosis_year", RULE_RANGE),
        (
            {"diagnosis_period": {"from": "2000-2004", "to": "2005-2009"}},
            [],
            "diagnosis_period",
            RULE_RANGE,
        ),
        ({"age_group": {"from": "0", "to": "10-14"}}, [], "age_group", RULE_RANGE),
        ({"iccc_subgroup": ["Ib", "IIa"]}, [], "iccc_subgroup", RULE_LIST),
        ({"iccc_subgroup": ["IVa", "IVb"]}, [], "iccc_subgroup", RULE_LIST),
        ({"iccc_group": ["I", "II"]}, [], "iccc_group", RULE_LIST),
        ({"sex": ["male", "female"]}, [], "sex", RULE_LIST),
        ({"age_group": ["0", "1-4", "5-9", "10-14", "15-19"]}, [], "age_group", RULE_LIST),
        ({"age_group": ["0", None]}, [], "age_group", RULE_LIST),
        ({"iccc_subgroup": [*GROUP_I, "V"]}, [], "iccc_subgroup", RULE_LIST),  # a union
    ],
)
def test_each_rule_refuses(cohort, by, variable, rule):
    _refused(cohort, by, variable=variable, rule=rule)


@pytest.mark.parametrize(
    ("cohort", "by"),
    [
        (None, []),
        ({}, ["iccc_group", "sex"]),
        ({"age_group": "0"}, ["age_group"]),  # the band of age_years and age_at_diagnosis
        ({"diagnosis_period": "2005-2009"}, ["diagnosis_period"]),  # of diagnosis_date
        ({"followup_band": "5y+", "vital_status": "alive"}, ["followup_band"]),  # of os_time
        ({"relapse_timing": "late"}, ["relapse_timing"]),  # of time_to_relapse
        ({"sex": "Female", "country": "FR"}, ["vital_status"]),  # declared levels
        ({"sex": None}, []),  # empty: one level of its own
        ({"sex": [None]}, []),
        ({"iccc_subgroup": ["Ib"]}, ["iccc_subgroup"]),  # a one-level list
        ({"iccc_subgroup": GROUP_I}, ["iccc_subgroup"]),  # a declared grouping
        ({"iccc_subgroup": ["Ie", "Ia", "Ic", "Ib", "Id"]}, []),  # in any order
        ({"iccc_group": ["IV", "V", "VI", "VII", "VIII", "IX", "X", "XI"]}, []),
        ({"age_group": ["0", "1-4", "5-9", "10-14"]}, []),
        ({"diagnosis_year": {"from": 2005, "to": 2009}}, []),  # one whole five-year band
        ({"diagnosis_year": [2010, 2011, 2012, 2013, 2014]}, []),
        ({"diagnosis_year": 2012}, []),
        ({"diagnosis_period": {"from": "2005-2009", "to": "2005-2009"}}, []),
        ({"age_group": {"from": "1-4", "to": "1-4"}}, []),
    ],
)
def test_each_rule_allows(cohort, by):
    check_feasibility(cohort, by)


def test_the_error_is_a_cohort_error_and_never_names_a_value():
    """The check runs without data, so it cannot name a stored value; it does not echo the
    request's values either (a refusal reads the same whatever was asked)."""
    message = _refused({"os_time": {"to": 4321}}, variable="os_time", rule=RULE_RAW)
    assert "4321" not in message and "followup_band" in message
    message = _refused(
        {"iccc_subgroup": ["IVb", "Ia", "IIa"]}, variable="iccc_subgroup", rule=RULE_LIST
    )
    assert not any(code in message for code in ("IVb", "Ia", "IIa"))
    assert issubclass(FeasibilityError, CohortError)


def test_a_misspelt_level_is_a_cohort_error():
    with pytest.raises(CohortError, match="sex"):
        check_feasibility({"sex": "mael"}, [])


def test_the_node_check_answers_only_counts():
    check_feasibility_study("count", {"iccc_group": "I"}, ["sex"])
    check_feasibility_study("crosstab", None, ["iccc_group", "age_group"])
    with pytest.raises(FeasibilityError) as info:
        check_feasibility_study("km", {"iccc_group": "I"}, [])
    assert info.value.rule == RULE_ANALYSIS
    with pytest.raises(FeasibilityError):
        check_feasibility_study("count", {"os_time": {"to": 100}}, [])


def test_every_raw_variable_is_refused_and_names_its_band():
    for name, var in view_variables().items():
        if var.var_class in ("numeric", "time", "date"):
            message = _refused({}, [name], variable=f"by {name}", rule=RULE_RAW)
            if var.band:
                assert f"`{var.band}`" in message
                check_feasibility({}, [var.band])  # the band itself is allowed


# --- issue 28's attacks ---------------------------------------------------------------------


def test_bisection_on_survival_time_is_refused_at_the_first_query():
    """Class 3: `os_time: {to: t}` bisected over ~30 count queries gives one child's survival
    time to the day. The first query is refused, so there is no answer to branch on."""
    lo, hi, answered = 0, 2**30, 0
    while lo < hi:  # ~30 steps if every query were answered
        mid = (lo + hi) // 2
        try:
            check_feasibility({"vital_status": "dead", "os_time": {"to": mid}}, [])
        except FeasibilityError as exc:
            assert exc.rule == RULE_RAW and str(mid) not in str(exc)
            break
        answered += 1
        lo = mid + 1
    assert answered == 0
    for field, end in (
        ("diagnosis_date", "2010-01-01"),
        ("first_relapse_date", "2010-01-01"),
        ("time_to_relapse", 100),
        ("relapse_os_time", 100),
    ):
        _refused({field: {"to": end}}, variable=field, rule=RULE_RAW)


def test_level_list_differencing_is_refused():
    """Class 1: `[X] + P1`, `[X] + P2`, `[X] + P1 + P2` for a rare subgroup X and two disjoint
    sets of common subgroups gives X's exact count from 3 queries: each list is refused."""
    x, p1, p2 = ["IVb"], ["Ia", "Ib"], ["IIa", "IIIb"]
    for lists in (x + p1, x + p2, x + p1 + p2):
        _refused({"iccc_subgroup": lists}, variable="iccc_subgroup", rule=RULE_LIST)
    # with declared groupings as P1, P2 the X-carrying lists are still not declared
    for lists in (x + GROUP_I, x + GROUP_I + ["IIa", "IIb", "IIc", "IId", "IIe"]):
        _refused({"iccc_subgroup": lists}, variable="iccc_subgroup", rule=RULE_LIST)


# --- the declared groupings: static properties of the file, no data --------------------------


def _allowed_lists() -> dict[str, list[frozenset[str]]]:
    return {name: [g.levels for g in groups] for name, groups in declared_groupings().items()}


def test_groupings_are_declared_with_sources():
    groups = declared_groupings()
    assert {"iccc_subgroup", "iccc_group", "age_group", "diagnosis_year"} <= set(groups)
    for name, gs in groups.items():
        assert declared_levels(name) is not None
        for g in gs:
            assert g.source and g.levels <= declared_levels(name)
    # built from the ICCC-3 table, not typed: group I is its five subgroups
    group_i = next(g for g in groups["iccc_subgroup"] if g.name == "I")
    assert group_i.levels == frozenset(GROUP_I) and "Leukemias" in group_i.label
    # the 2-subgroup groups are left out, with the reason in the file
    assert not {"IV", "V", "XII"} & {g.name for g in groups["iccc_subgroup"]}


def test_no_grouping_has_fewer_than_three_levels():
    for name, lists in _allowed_lists().items():
        assert all(len(levels) >= 3 for levels in lists), name


def test_no_two_allowed_lists_differ_by_one_level():
    """No two groupings, nor a grouping and a single level or a single level's complement,
    differ by exactly one level."""
    for name in declared_groupings():
        assert one_level_differences(name) == [], name


def test_no_three_allowed_lists_isolate_one_level():
    """The three-way differencing cannot work with the actual file: no sum or difference of at
    most three declared groupings of a variable is exactly one level (brute force, and a second
    plain-Python brute force over sets to check the first)."""
    for name, lists in _allowed_lists().items():
        assert isolating_combinations(name, most=3) == [], name
        for k in range(1, min(3, len(lists)) + 1):
            for chosen in combinations(lists, k):
                for signs in product((1, -1), repeat=k):
                    total: Counter[str] = Counter()
                    for sign, levels in zip(signs, chosen, strict=True):
                        total.update(dict.fromkeys(levels, sign))
                    nonzero = {lv: n for lv, n in total.items() if n}
                    assert not (len(nonzero) == 1 and set(nonzero.values()) == {1}), (name, k)


def test_the_brute_force_finds_what_it_should(monkeypatch):
    """The static checks are not vacuous: a file with 0-19 beside 0-14 or a two-subgroup group
    fails them."""
    import ccdp.cohort.feasibility as feas

    real = feas.declared_groupings()
    extra = feas.Grouping("age_group", "0-19", frozenset(declared_levels("age_group")), "test")
    pair = feas.Grouping("iccc_subgroup", "IV", frozenset({"IVa", "IVb"}), "test")
    bigger = {**real, "age_group": (*real["age_group"], extra), "iccc_subgroup": (pair,)}
    monkeypatch.setattr(feas, "declared_groupings", lambda: bigger)
    assert ("0-14", "0-19") in [tuple(sorted(p)) for p in feas.one_level_differences("age_group")]
    assert ("IV", "level IVa") in feas.one_level_differences("iccc_subgroup")
    assert ("-0-14", "+0-19") in feas.isolating_combinations("age_group")


def test_the_command_checks_a_study_spec(ccdp, tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "analysis: count\n"
        "cohort: {iccc_subgroup: [Ia, Ib, Ic, Id, Ie], diagnosis_year: {from: 2005, to: 2009}}\n"
        "by: [sex, followup_band]\n"
    )
    assert "within the feasibility tier's rules" in ccdp("cohort", "check-feasibility", ok).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("analysis: count\ncohort: {vital_status: dead, os_time: {to: 400}}\n")
    proc = ccdp("cohort", "check-feasibility", bad, check=False)
    assert proc.returncode == 2
    assert "os_time" in proc.stderr and "band-only" in proc.stderr and "400" not in proc.stderr

"""The one check of which view variables a request may name, and in which role.

Every analysis's parameter model calls `check_variables`, so the rule is the same at the hub
(when a study spec is validated) and at the node (which validates the same models again before it
reads any data). The roles follow the disclosure classes of `data/view_variables.yaml`:

* `group` (by, strata, categorical covariates' grouping): categorical only; a numeric or date
  variable is refused with a pointer to its declared band (age_group, diagnosis_period...);
* `covariate`: categorical, numeric or time, never a date;
* `binary`: a categorical variable whose declared levels are exactly 0 and 1;
* `count`: a numeric or time variable, or a binary one;
* `time`: a numeric or time variable (person-time).

Identifiers are refused in every role. Messages name the key and the rule, never a value.
"""

from __future__ import annotations

import difflib
from typing import Literal

from ccdp.cohort.view import ViewVariable, declared_levels, view_variables

Role = Literal["group", "covariate", "binary", "count", "time"]

ROLE_CLASSES: dict[str, frozenset[str]] = {
    "group": frozenset({"categorical"}),
    "covariate": frozenset({"categorical", "numeric", "time"}),
    "binary": frozenset({"categorical"}),
    "count": frozenset({"categorical", "numeric", "time"}),
    "time": frozenset({"numeric", "time"}),
}
ROLE_WORDS = {
    "group": "grouping (by, strata)",
    "covariate": "a model covariate",
    "binary": "a binary (0/1) outcome",
    "count": "a count outcome",
    "time": "person-time",
}


def is_binary(var: ViewVariable) -> bool:
    return var.var_class == "categorical" and declared_levels(var.name) == frozenset({"0", "1"})


def variable_problem(name: str, role: Role) -> str | None:
    """Why `name` cannot play `role`, or None when it can."""
    variables = view_variables()
    var = variables.get(name)
    if var is None:
        public = [n for n, v in variables.items() if not v.identifier]
        close = difflib.get_close_matches(name, public, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (see `ccdp cohort variables`)"
        return f"{name!r} is not a variable of the analysis view{hint}"
    if var.identifier:
        return f"{name!r} is an identifier: identifiers never leave the node and are not analysed"
    if var.var_class not in ROLE_CLASSES[role] or (role == "binary" and not is_binary(var)):
        hint = f": use its band {var.band!r}" if var.band and role == "group" else ""
        return f"{name!r} is a {var.var_class} variable and cannot be {ROLE_WORDS[role]}{hint}"
    if role == "count" and var.var_class == "categorical" and not is_binary(var):
        return f"{name!r} is a categorical variable and cannot be {ROLE_WORDS[role]}"
    return None


def check_variables(names: list[str], role: Role = "group") -> list[str]:
    """`names` if each may play `role`, else ValueError naming every problem (pydantic adds the
    key path)."""
    problems = [p for p in (variable_problem(n, role) for n in names) if p]
    if len(set(names)) != len(names):
        problems.append("a variable is named twice")
    if problems:
        raise ValueError("; ".join(problems))
    return names


def check_variable(name: str, role: Role) -> str:
    """One variable, as `check_variables`."""
    return check_variables([name], role)[0]

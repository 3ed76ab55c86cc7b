"""Words for machine names: the one lookup every screen, report and plot uses.

The words are declared beside what they name: a field's values in `model/cdm.yaml` (`labels`),
a view variable and its values in `data/view_variables.yaml` (`label`, `labels`; levels
`model:table.field` take the field's labels), and the other machine names a result carries
(outcomes, standard populations, result columns) in cdm.yaml's `terms`. JSON output keeps the
machine names: labels are for people.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ccdp.cohort.view import view_variables
from ccdp.model import load_model

# a regression term: `variable[level]` for a level of a categorical covariate, else a variable
_LEVEL_TERM = re.compile(r"^(?P<var>[A-Za-z_][A-Za-z0-9_]*)\[(?P<level>.*)\]$")


def term_label(name: str) -> str:
    """The words for an outcome, a standard population or a result column (else the name)."""
    return load_model().term(name)


def variable_label(name: str) -> str:
    """The words for a view variable (`label`), else a term, else the name itself."""
    var = view_variables().get(name)
    if var is not None and var.label:
        return var.label
    return term_label(name)


def value_label(variable: str, value: Any) -> str:
    """The words for one value of a variable: the variable's own `labels`, else those of the
    data-model field its levels come from, else the value as written."""
    text = str(value)
    var = view_variables().get(variable)
    if var is None:
        return text
    if var.labels and text in var.labels:
        return var.labels[text]
    if isinstance(var.levels, str) and var.levels.startswith("model:"):
        table, _, field = var.levels.removeprefix("model:").partition(".")
        return load_model().table(table).field(field).label(text)
    return text


def group_label(group: str, by: Sequence[str]) -> str:
    """A joined group label ('I, male' for by = [iccc_group, sex]) in words, part by part."""
    if not by:
        return group
    parts = group.split(", ")
    if len(parts) != len(by):
        return group
    return ", ".join(value_label(v, p) for v, p in zip(by, parts, strict=True))


def column_label(name: Any) -> str:
    """A table column in words: a view variable's label, else a term, else the name."""
    return variable_label(str(name))


def model_term_label(term: str) -> str:
    """A regression term in words: 'arm[B]' -> 'Arm: B'; 'age_at_diagnosis' -> its label."""
    m = _LEVEL_TERM.match(term)
    if m is None:
        return variable_label(term)
    var = m["var"]
    return f"{variable_label(var)}: {value_label(var, m['level'])}"


def reference_label(reference: dict[str, str]) -> str:
    """A model's reference levels in words: 'reference levels: Arm = A, Sex = female'."""
    if not reference:
        return ""
    return "reference levels: " + ", ".join(
        f"{variable_label(k)} = {value_label(k, v)}" for k, v in reference.items()
    )

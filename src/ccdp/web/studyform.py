"""The New study form's fields turned into the study spec it submits (pure: no hub, no I/O).

The form offers every field a registered analysis may take; the spec keeps only those the
chosen analysis's own parameter model has (so the YAML shows exactly what is sent), and says
which filled-in fields it left out. Lists are typed comma-separated (`by: country, sex`), in
the order given: the order of `by` is the order of the groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ccdp.analyses import registry
from ccdp.cohort.view import view_variables

SURVIVAL_OUTCOMES = ("os", "efs", "relapse_os", "relapse_efs")
PARAM_FIELDS = ("outcome", "by", "unit", "strata", "covariates")
UNITS = ("tumours", "patients", "specimens")  # what a count or crosstab counts
RANGES = {  # form field prefix -> cohort variable of an inclusive {from, to} range
    "age": "age_years",
    "year": "diagnosis_year",
}
MULTI = ("iccc_group",)  # multi-selects
TEXT_LISTS = ("iccc_subgroup", "trial", "arm")  # comma-separated cohort values
CHOICES = ("sex", "relapsed")  # a select with "any"


@dataclass
class Built:
    """The spec, what the form left out of it (notes) and what stops it being sent."""

    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return yaml.safe_dump(self.spec, sort_keys=False, allow_unicode=True).strip()


def one(form: dict[str, list[str]], key: str) -> str:
    return ((form.get(key) or [""])[0] or "").strip()


def split_list(text: str) -> list[str]:
    return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]


def number(text: str) -> int | float | str:
    """A typed number ("2005" -> 2005); anything else as typed, for the hub to refuse."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def takes(analysis: str, key: str) -> bool:
    """Does the analysis's parameter model have `key` (unknown analysis: keep everything, for
    the hub to name the error)?"""
    if analysis not in registry.names():
        return True
    return key in registry.get(analysis).params_model.model_fields


def cohort_of(form: dict[str, list[str]]) -> dict[str, Any]:
    cohort: dict[str, Any] = {}
    for key in MULTI:
        chosen = [v for v in form.get(key, []) if v.strip()]
        if chosen:
            cohort[key] = chosen
    for key in TEXT_LISTS:
        values = split_list(one(form, key))
        if values:
            cohort[key] = values
    for key in CHOICES:
        value = one(form, key)
        if value and value != "any":
            cohort[key] = [number(value) if key == "relapsed" else value]
    for prefix, var in RANGES.items():
        lo, hi = one(form, f"{prefix}_from"), one(form, f"{prefix}_to")
        if lo or hi:
            cohort[var] = {
                **({"from": number(lo)} if lo else {}),
                **({"to": number(hi)} if hi else {}),
            }
    return cohort


def build_spec(form: dict[str, list[str]], all_nodes: list[str]) -> Built:
    """The study spec the form describes, in the order a reader expects its keys."""
    analysis = one(form, "analysis")
    spec: dict[str, Any] = {"title": one(form, "title") or "untitled study", "analysis": analysis}
    built = Built(spec)
    if one(form, "project"):
        spec["project"] = one(form, "project")
    for key in PARAM_FIELDS:
        text = one(form, key)
        if not text:
            continue
        if not takes(analysis, key):
            built.notes.append(f"{key} is not a parameter of {analysis}: left out")
            continue
        if key in ("outcome", "unit"):
            spec[key] = text
        elif key == "strata":
            parts = split_list(text)
            spec[key] = parts[0] if len(parts) == 1 and parts[0] in ("node", "none") else parts
        else:
            spec[key] = split_list(text)
    extra = one(form, "extra")
    if extra:
        try:
            more = yaml.safe_load(extra)
        except yaml.YAMLError as exc:
            more = None
            built.problems.append(f"other parameters: not YAML ({str(exc).splitlines()[0]})")
        if more is not None and not isinstance(more, dict):
            built.problems.append("other parameters: give a mapping, e.g. `ties: breslow`")
        elif more:
            clash = sorted(k for k in more if k in spec)
            if clash:
                built.problems.append(
                    f"other parameters: {', '.join(map(str, clash))} already set by the form"
                )
            else:
                spec.update(more)
    cohort = cohort_of(form)
    if cohort:
        spec["cohort"] = cohort
    nodes = [n for n in form.get("nodes", []) if n]
    if not nodes:
        built.problems.append("nodes: choose at least one node")
    elif sorted(nodes) != sorted(all_nodes):
        spec["nodes"] = nodes
    min_nodes = one(form, "min_nodes")
    if min_nodes:
        spec["min_nodes"] = number(min_nodes)
    return built


def form_of_spec(spec: dict[str, Any], all_nodes: list[str]) -> dict[str, list[str]]:
    """The form's fields for a spec (to start a form from an example)."""
    form: dict[str, list[str]] = {
        "title": [str(spec.get("title", ""))],
        "analysis": [str(spec.get("analysis", ""))],
        "project": [str(spec.get("project", ""))],
        "nodes": list(spec.get("nodes") or all_nodes),
    }
    for key in PARAM_FIELDS:
        value = spec.get(key)
        if value:
            form[key] = [", ".join(value) if isinstance(value, list) else str(value)]
    return form


def group_variables() -> list[str]:
    """Variables that may group a result (`by`, strata): the categorical, non-identifier ones."""
    return [n for n, v in view_variables().items() if v.var_class == "categorical"]


def iccc_groups() -> list[tuple[str, str]]:
    """ICCC-3 main groups (code, label), in the classification's order (as on Feasibility)."""
    from ccdp.web.feasibility import iccc_choices

    return iccc_choices()[0]


def analysis_params(analysis: str) -> list[str]:
    """The form fields the analysis takes (outcome, by, unit, strata, covariates)."""
    return [k for k in PARAM_FIELDS if takes(analysis, k)]

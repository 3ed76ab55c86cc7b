"""Cohort spec: a declarative filter over the analysis view, compiled to parameterised SQL.

`{iccc_group: [I, II], diagnosis_year: {from: 2005, to: 2015}, sex: female}` means
iccc_group IN (I, II) AND diagnosis_year BETWEEN 2005 AND 2015 AND sex = female. Column names
come only from the view's own variable list and values only travel as bound parameters, so a
spec can never inject SQL.
"""

from __future__ import annotations

import difflib
import math
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from ccdp.cohort.view import ViewVariable, declared_levels, public_variables, view_variables
from ccdp.errors import SpecError

Scalar = str | int | float | date | None


class CohortError(SpecError):
    """A cohort spec names an unknown variable or a value of the wrong type."""


class Range(BaseModel):
    """An inclusive range; either end may be left open."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Scalar = Field(default=None, alias="from")
    to: Scalar = None

    @model_validator(mode="after")
    def _one_end(self) -> Range:
        if self.from_ is None and self.to is None:
            raise ValueError("a range needs `from`, `to` or both")
        return self


Condition = Range | list[Scalar] | Scalar


def _declared(var: ViewVariable, value: Any) -> Any:
    """A value of a variable with declared levels, in its declared spelling (`Male` -> male),
    or ValueError with a did-you-mean: a value no row can have would silently select nobody."""
    levels = declared_levels(var.name)
    if levels is None or value is None or str(value) in levels:
        return value
    folded = {lv.casefold(): lv for lv in levels}
    if str(value).casefold() in folded:
        level = folded[str(value).casefold()]
        return int(level) if var.type == "integer" else level
    close = difflib.get_close_matches(str(value), sorted(levels), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"{var.name}: {value!r} is not one of its levels{hint}")


def _coerce(var: ViewVariable, value: Any) -> Any:
    """A filter value in the variable's type (so `age_group: 0` means '0', `year: '2005'` 2005),
    in its declared spelling when the variable has declared levels."""
    return _declared(var, _typed(var, value))


def _typed(var: ViewVariable, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{var.name}: booleans are not values of a {var.type} variable")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{var.name}: {value!r} is not a finite number")
    try:
        if var.type == "string":
            return str(value)
        if var.type in ("integer", "float"):
            f = float(value)
            if not math.isfinite(f) or (var.type == "integer" and f != int(f)):
                raise ValueError
            return int(f) if var.type == "integer" else f
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{var.name}: {value!r} is not a {var.type}") from None


class CohortSpec(RootModel[dict[str, Condition]]):
    """AND across variables; a list is OR within a variable; `{from, to}` an inclusive range."""

    root: dict[str, Condition] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_and_typed(self) -> CohortSpec:
        allowed = public_variables()
        variables = view_variables()
        for name, cond in self.root.items():
            if name in variables and variables[name].identifier:
                raise ValueError(
                    f"{name!r} is an identifier: identifiers never leave the node and cannot "
                    "select a cohort"
                )
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"the analysis view has: {', '.join(allowed)}"
                )
                raise ValueError(f"unknown cohort variable {name!r}; {hint}")
            var = variables[name]
            if isinstance(cond, Range):
                cond.from_, cond.to = _coerce(var, cond.from_), _coerce(var, cond.to)
            elif isinstance(cond, list):
                if not cond:
                    raise ValueError(f"{name}: an empty list selects nothing")
                self.root[name] = [_coerce(var, v) for v in cond]
            else:
                self.root[name] = _coerce(var, cond)
        return self

    @classmethod
    def load(cls, data: dict[str, Any] | None) -> CohortSpec:
        """Validate a cohort from YAML/JSON, raising CohortError that names the key."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise CohortError(f"cohort: {_first_error(exc)}") from None

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON (ranges as {from, to}, dates as ISO strings)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)

    def compile(self) -> tuple[str, list[Any]]:
        """WHERE clause over the view's columns with `?` placeholders, and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for name, cond in self.root.items():
            col = f'v."{name}"'
            if isinstance(cond, Range):
                parts = []
                if cond.from_ is not None:
                    parts.append(f"{col} >= ?")
                    params.append(cond.from_)
                if cond.to is not None:
                    parts.append(f"{col} <= ?")
                    params.append(cond.to)
                clauses.append("(" + " AND ".join(parts) + ")")
            else:
                values = cond if isinstance(cond, list) else [cond]
                present = [v for v in values if v is not None]
                ors = []
                if present:
                    ors.append(f"{col} IN (" + ", ".join("?" for _ in present) + ")")
                    params.extend(present)
                if len(present) < len(values):
                    ors.append(f"{col} IS NULL")
                clauses.append("(" + " OR ".join(ors) + ")")
        return (" AND ".join(clauses) or "TRUE"), params


def _first_error(exc: ValidationError) -> str:
    """One readable line from a pydantic error: location and message, without pydantic noise."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p not in ("root",))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg

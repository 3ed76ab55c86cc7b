"""The case summary a node sends to an expert board, and the board's recommendation
(docs/referrals.md).

The summary is the one patient-level message ccdp lets leave a node, for the child's own care:
a closed shape (unknown fields are refused at both ends), coded fields from the model's own value
sets, days counted from diagnosis instead of dates, age in months instead of a birth date, and no
key of any record. Free-text fields (a marker's result, an agent, a protocol) are short and of a
restricted alphabet, and carry no date, no long number and no record key: the disclosure gate
(`ccdp.disclosure.case.release_case`) withholds a value that breaks a rule, and this model, which
the hub validates with too, refuses one that got past it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ccdp.errors import SpecError
from ccdp.model import load_model

SCHEMA = "ccdp.case-summary/1"
MAX_TEXT = 80
# letters (any script), digits, space and the punctuation of lab results and protocol names
_ALPHABET = re.compile(r"^[\w +\-/.,%()<>=:;^]+$")
# 2019-04-02, 2019/4, 02.04.2019, 2/4/19: a calendar date in any common order
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
# a run of 6 or more digits not after a decimal point: a record, phone or insurance number
_LONG_NUMBER = re.compile(r"(?<![.\d])\d{6,}")


class CaseError(SpecError):
    """A recommendation file (or a case summary) is not of the accepted shape."""


def text_problem(value: str) -> str | None:
    """Why a free-text value may not leave the node, or None (the rules of docs/referrals.md)."""
    if not value or len(value) > MAX_TEXT:
        return f"free text must be 1 to {MAX_TEXT} characters"
    if not _ALPHABET.match(value):
        return "free text may hold only letters, digits, spaces and + - / . , % ( ) < > = : ; ^"
    if _DATE.search(value):
        return "free text may not hold a date (days from diagnosis are sent instead)"
    if _LONG_NUMBER.search(value):
        return "free text may not hold a number of six or more digits (a record number)"
    return None


def _safe(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


SafeText = Annotated[str, AfterValidator(_safe)]
Day = Annotated[int, Field(ge=-3650, le=36500, description="Days from diagnosis")]


def _allowed(table: str, field: str) -> tuple[str, ...]:
    for f in load_model().tables[table].fields:
        if f.name == field:
            return tuple(str(v) for v in f.allowed or ())
    raise KeyError(f"{table}.{field}")


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Diagnosis(Closed):
    morphology: str = Field(pattern=r"^\d{4}$")
    behaviour: int = Field(ge=0, le=9)
    topography: str = Field(pattern=r"^C\d{2}\.\d$")
    label: SafeText | None = None
    iccc_group: str | None = Field(None, pattern=r"^[IVX]{1,4}$")
    iccc_subgroup: str | None = Field(None, pattern=r"^[IVX]{1,4}[a-f]?$")


class Relapse(Closed):
    """The first relapse's classification (cohort/derived/risk.py) as the node's view gives it."""

    time_band: Literal["very_early", "early", "late", "unknown"] | None = None
    site_group: Literal["isolated_bm", "combined", "isolated_em", "unknown"] | None = None
    strategic_group: Literal["S1", "S2", "S3", "S4", "unknown"] | None = None
    risk: Literal["SR", "HR", "unknown"] | None = None
    day: Day | None = None


class Event(Closed):
    type: str
    day: Day
    relapse_site: str | None = None
    bm_blasts_pct: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _coded(self) -> Event:
        if self.type not in _allowed("event", "event_type"):
            raise ValueError(f"event type {self.type!r} is not of the model")
        if self.relapse_site is not None and self.relapse_site not in _allowed(
            "event", "relapse_site"
        ):
            raise ValueError(f"relapse site {self.relapse_site!r} is not of the model")
        return self


class Treatment(Closed):
    type: str
    agent: SafeText | None = None
    protocol: SafeText | None = None
    start_day: Day | None = None
    end_day: Day | None = None

    @model_validator(mode="after")
    def _coded(self) -> Treatment:
        if self.type not in _allowed("treatment", "type"):
            raise ValueError(f"treatment type {self.type!r} is not of the model")
        return self


class Marker(Closed):
    marker: SafeText
    value: SafeText | None = None
    unit: SafeText | None = None
    day: Day | None = None


class Enrolment(Closed):
    trial: SafeText
    arm: SafeText | None = None


class TumourCase(Closed):
    diagnosis: Diagnosis
    immunophenotype: str | None = None
    cns_status: str | None = None
    wbc_at_diagnosis: float | None = Field(None, ge=0, le=2000)
    stage_system: str | None = None
    stage: SafeText | None = None
    risk_group: SafeText | None = None
    frontline_end_day: Day | None = None
    relapse: Relapse | None = None
    events: list[Event] = Field(default_factory=list, max_length=50)
    treatments: list[Treatment] = Field(default_factory=list, max_length=100)
    biomarkers: list[Marker] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _coded(self) -> TumourCase:
        for name in ("immunophenotype", "cns_status", "stage_system"):
            value = getattr(self, name)
            if value is not None and value not in _allowed("tumour", name):
                raise ValueError(f"{name} {value!r} is not of the model")
        return self


class CaseSummary(Closed):
    """One child's case, as a board reads it: no key, no date, no name."""

    schema_: Literal["ccdp.case-summary/1"] = Field("ccdp.case-summary/1", alias="schema")
    age_months: int = Field(ge=0, le=360, description="Completed months at first diagnosis")
    sex: Literal["male", "female", "unknown"]
    vital_status: Literal["alive", "dead", "unknown"]
    last_contact_day: Day | None = None
    tumours: list[TumourCase] = Field(min_length=1, max_length=5)
    trials: list[Enrolment] = Field(default_factory=list, max_length=10)
    withheld: int = Field(0, ge=0, description="Free-text values the node's gate withheld")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def case_digest(summary: dict[str, Any], question: str) -> str:
    """sha256 of what the node sends (canonical JSON): the node's and the hub's audit logs
    both carry it, so either side can show which case the other received."""
    body = {"summary": summary, "question": question}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- the board's recommendation ----------------------------------------------------------------
@cache
def board_options() -> dict[str, str]:
    """The recommendation options (clinical/data/board_options.csv): id -> label."""
    text = resources.files("ccdp.clinical").joinpath("data/board_options.csv").read_text("utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["option"]: r["label"] for r in rows}


def _option(value: str) -> str:
    if value not in board_options():
        raise ValueError(f"{value!r} is not a board option; options: {', '.join(board_options())}")
    return value


class Recommendation(Closed):
    """What the board recommends: one or more options, the trial when one is named, free text
    (the board's reasoning, for the treating team; it is not checked like the case's text)."""

    options: list[Annotated[str, AfterValidator(_option)]] = Field(min_length=1, max_length=8)
    trial: str | None = Field(None, min_length=1, max_length=100)
    text: str = Field("", max_length=4000)

    @model_validator(mode="after")
    def _trial_named(self) -> Recommendation:
        if "trial" in self.options and not self.trial:
            raise ValueError("options name `trial`: give the trial's name in `trial`")
        if len(set(self.options)) != len(self.options):
            raise ValueError("an option is given twice")
        return self


__all__ = [
    "SCHEMA",
    "CaseError",
    "CaseSummary",
    "Recommendation",
    "SafeText",
    "TumourCase",
    "board_options",
    "case_digest",
    "text_problem",
]

"""The analysis view: one row per tumour with the derived variables every analysis reads.

The view is SQL over the node store's model tables (DuckDB), so a node never materialises more than
a cohort's columns. Its variables are documented in `data/view_variables.yaml`, the one definition
that the cohort spec, the study spec and the dictionary read.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ccdp.errors import SpecError

VarType = Literal["string", "integer", "float", "date"]
# Disclosure classes (docs/disclosure.md): what a request may do with a variable.
VarClass = Literal["identifier", "categorical", "numeric", "time", "date"]
# What a row of the view is: a tumour (every analysis) or an available biobank specimen of a
# tumour (`count`/`crosstab` with `unit: specimens`, which reads specimen variables too).
Rows = Literal["tumours", "specimens"]

# Event types that end event-free survival (the CDM's event.event_type values).
EFS_EVENTS = ("relapse", "progression", "second_malignancy", "death")


class ViewVariable(BaseModel):
    """One column of the analysis view."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: VarType
    var_class: VarClass = Field(alias="class")
    levels: list[str | int] | str | None = None
    band: str | None = None
    rows: Rows = "tumours"
    label: str | None = Field(None, description="the variable's name for people")
    labels: dict[str, str] | None = Field(None, description="words for values (else the value)")
    description: str
    derivation: str

    @property
    def identifier(self) -> bool:
        return self.var_class == "identifier"

    @model_validator(mode="after")
    def _levels_only_for_categories(self) -> ViewVariable:
        if self.levels is not None and self.var_class != "categorical":
            raise ValueError(f"{self.name}: only categorical variables have declared levels")
        if self.band is not None and self.var_class not in ("numeric", "time", "date"):
            raise ValueError(f"{self.name}: only numeric, time and date variables have a band")
        if self.labels and isinstance(self.levels, list):
            stray = sorted(set(self.labels) - {str(v) for v in self.levels})
            if stray:
                raise ValueError(f"{self.name}: labels for values not declared: {stray}")
        return self


@cache
def view_variables() -> dict[str, ViewVariable]:
    """Every view column by name, in view order (from the packaged data file)."""
    text = resources.files("ccdp.cohort").joinpath("data/view_variables.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    return {v["name"]: ViewVariable.model_validate(v) for v in raw["variables"]}


@cache
def declared_levels(name: str) -> frozenset[str] | None:
    """The declared level set of a categorical variable (labels as text), or None when its
    levels are not fixed in advance: only declared labels may name a withheld cell."""
    var = view_variables().get(name)
    if var is None and "." in name:  # `table.field` of the data model (e.g. specimen.type)
        return _model_levels(name)
    if var is None or var.levels is None:
        return None
    if isinstance(var.levels, list):
        return frozenset(str(v) for v in var.levels)
    return frozenset(_code_list(var.levels))


def _model_levels(name: str) -> frozenset[str] | None:
    """The `allowed` list of a data-model field named `table.field` (node catalogues count
    store tables, not view variables), or None when the field lists none."""
    from ccdp.model import load_model

    table, _, field = name.partition(".")
    tdef = load_model().tables.get(table)
    fdef = next((f for f in tdef.fields if f.name == field), None) if tdef else None
    if fdef is None or not fdef.allowed:
        return None
    return frozenset(str(v) for v in fdef.allowed)


@cache
def level_order(name: str) -> tuple[str, ...] | None:
    """The levels a variable lists itself in view_variables.yaml, in their meaningful order
    (relapse timing: very_early, early, late), or None when they are a code-list reference."""
    var = view_variables().get(name)
    if var is None or not isinstance(var.levels, list):
        return None
    return tuple(str(v) for v in var.levels)


def _code_list(ref: str) -> list[str]:
    """The labels a level reference names (see the header of view_variables.yaml)."""
    kind, _, what = ref.partition(":")
    if kind == "model":
        from ccdp.model import load_model

        table, _, field = what.partition(".")
        allowed = next(f.allowed for f in load_model().tables[table].fields if f.name == field)
        return [str(v) for v in allowed or []]
    if kind in ("range", "periods"):
        lo, hi = (int(x) for x in what.split("-"))
        if kind == "range":
            return [str(y) for y in range(lo, hi + 1)]
        return [f"{y}-{y + 4}" for y in range(lo, hi + 1, 5)]
    if kind == "terminology":
        return _terminology(what)
    raise SpecError(f"unknown level reference {ref!r} in view_variables.yaml")


def _terminology(name: str) -> list[str]:
    if name == "countries":
        from ccdp.terminology.countries import countries

        return list(countries()["code"])
    if name in ("iccc_group", "iccc_subgroup"):
        from ccdp.terminology.iccc import iccc_codes

        column = "group" if name == "iccc_group" else "subgroup"
        return sorted({str(v) for e in ("2017", "who2008") for v in iccc_codes(e)[column]})
    if name == "vrt_entities":
        from ccdp.cohort.derived.vrt import entity_ids

        return entity_ids()
    if name in ("icdo3_morphology", "icdo3_topography"):
        from ccdp.terminology.icdo3 import morphology_codes, topography_codes

        table = morphology_codes() if name == "icdo3_morphology" else topography_codes()
        return list(table["code"].astype(str))
    raise SpecError(f"unknown code list {name!r} in view_variables.yaml")


def public_variables() -> list[str]:
    """Variables a study may filter or group on (everything but the node-only identifiers)."""
    return [n for n, v in view_variables().items() if not v.identifier]


def _efs_list() -> str:
    return ", ".join(f"'{e}'" for e in EFS_EVENTS)


@cache  # the same text every time: built once (a node embeds it in every cohort query)
def view_sql(schema: str = "store") -> str:
    """SELECT producing the analysis view; the node name is its first `?` parameter."""
    from ccdp.cohort.derived import risk, vrt

    s = f'"{schema}".' if schema else ""
    efs = _efs_list()
    return f"""
WITH enrol AS (
    SELECT patient_id, trial, arm, risk_group AS trial_risk_group FROM (
        SELECT *, row_number() OVER (
            PARTITION BY patient_id ORDER BY enrolment_date NULLS LAST, trial) AS rn
        FROM {s}trial_enrolment) WHERE rn = 1
),
ev AS (
    SELECT e.event_id, e.tumour_id, e.event_type, e.event_date, e.relapse_site, e.bm_blasts_pct
    FROM {s}event e JOIN {s}tumour t ON e.tumour_id = t.tumour_id
    WHERE e.event_date >= t.diagnosis_date
),
first_efs AS (
    SELECT tumour_id, min(event_date) AS efs_date FROM ev
    WHERE event_type IN ({efs}) GROUP BY tumour_id
),
first_relapse AS (
    SELECT tumour_id, event_date AS relapse_date, relapse_site, bm_blasts_pct AS relapse_blasts
    FROM (
        SELECT *, row_number() OVER (PARTITION BY tumour_id ORDER BY event_date, event_id) AS rn
        FROM ev WHERE event_type = 'relapse') WHERE rn = 1
),
after_relapse AS (
    SELECT ev.tumour_id, min(ev.event_date) AS next_date
    FROM ev JOIN first_relapse r ON ev.tumour_id = r.tumour_id
    WHERE ev.event_type IN ({efs}) AND ev.event_date > r.relapse_date
    GROUP BY ev.tumour_id
),
base AS (
    SELECT
        p.patient_id, t.tumour_id, p.country, p.sex, p.birth_date, t.diagnosis_date,
        t.morphology, t.topography, t.behaviour, t.iccc_group, t.iccc_subgroup,
        t.immunophenotype, t.cns_status, t.stage_system, t.stage,
        coalesce(t.risk_group, en.trial_risk_group) AS risk_group,
        t.wbc_at_diagnosis, en.trial, en.arm, p.vital_status, p.last_contact_date,
        t.frontline_end_date, t.iccc_extended,
        CASE WHEN p.death_date IS NOT NULL THEN p.death_date
             WHEN p.vital_status = 'dead' THEN p.last_contact_date END AS death,
        date_diff('year', p.birth_date, t.diagnosis_date)
            - CASE WHEN strftime(t.diagnosis_date, '%m%d') < strftime(p.birth_date, '%m%d')
                   THEN 1 ELSE 0 END AS age_years,
        fe.efs_date, fr.relapse_date, fr.relapse_site, fr.relapse_blasts, ar.next_date,
        row_number() OVER (
            PARTITION BY p.patient_id ORDER BY t.diagnosis_date NULLS LAST, t.tumour_id
        ) AS tumour_seq
    FROM {s}tumour t
    JOIN {s}patient p ON p.patient_id = t.patient_id
    LEFT JOIN enrol en ON en.patient_id = p.patient_id
    LEFT JOIN first_efs fe ON fe.tumour_id = t.tumour_id
    LEFT JOIN first_relapse fr ON fr.tumour_id = t.tumour_id
    LEFT JOIN after_relapse ar ON ar.tumour_id = t.tumour_id
),
timed AS (
    SELECT *,
        coalesce(death, last_contact_date) AS end_date,
        least(efs_date, death) AS efs_end,
        least(next_date, death) AS relapse_efs_end,
        {risk.site_group_sql()} AS relapse_site_group,
        {risk.band_set_sql()} AS _band_set,
        {risk.lineage_set_sql()} AS _lineage_set
    FROM base
)
SELECT
    patient_id, tumour_id, tumour_seq::INTEGER AS tumour_seq, ?::VARCHAR AS node, country, sex,
    date_diff('day', birth_date, diagnosis_date) / 365.25 AS age_at_diagnosis,
    age_years::INTEGER AS age_years,
    CASE WHEN age_years < 0 THEN NULL
         WHEN age_years < 1 THEN '0' WHEN age_years < 5 THEN '1-4'
         WHEN age_years < 10 THEN '5-9' WHEN age_years < 15 THEN '10-14'
         WHEN age_years < 20 THEN '15-19' END AS age_group,
    diagnosis_date,
    year(diagnosis_date)::INTEGER AS diagnosis_year,
    ((year(diagnosis_date) // 5) * 5)::VARCHAR || '-'
        || ((year(diagnosis_date) // 5) * 5 + 4)::VARCHAR AS diagnosis_period,
    morphology, topography, behaviour, iccc_group, iccc_subgroup, immunophenotype,
    cns_status, stage_system, stage, risk_group, wbc_at_diagnosis, trial, arm, vital_status,
    CASE WHEN end_date >= diagnosis_date
         THEN date_diff('day', diagnosis_date, end_date) END::INTEGER AS os_time,
    (death IS NOT NULL)::INTEGER AS os_event,
    CASE WHEN end_date < diagnosis_date THEN NULL
         WHEN date_diff('day', diagnosis_date, end_date) < 365.25 THEN '0-1y'
         WHEN date_diff('day', diagnosis_date, end_date) < 1095.75 THEN '1-3y'
         WHEN date_diff('day', diagnosis_date, end_date) < 1826.25 THEN '3-5y'
         WHEN date_diff('day', diagnosis_date, end_date) >= 1826.25 THEN '5y+' END
        AS followup_band,
    CASE WHEN coalesce(efs_end, end_date) >= diagnosis_date
         THEN date_diff('day', diagnosis_date, coalesce(efs_end, end_date)) END::INTEGER
        AS efs_time,
    (efs_end IS NOT NULL)::INTEGER AS efs_event,
    (relapse_date IS NOT NULL)::INTEGER AS relapsed,
    relapse_date AS first_relapse_date,
    date_diff('day', diagnosis_date, relapse_date)::INTEGER AS time_to_relapse,
    relapse_site,
    CASE WHEN relapse_date IS NULL THEN NULL
         WHEN relapse_date < diagnosis_date + INTERVAL 18 MONTH THEN 'very_early'
         WHEN relapse_date < coalesce(frontline_end_date, diagnosis_date + INTERVAL 24 MONTH)
                             + INTERVAL 6 MONTH THEN 'early'
         ELSE 'late' END AS relapse_timing,
    {risk.time_band_sql()} AS relapse_time_band,
    relapse_site_group,
    {risk.strategic_group_sql()} AS bfm_strategic_group,
    {risk.relapse_risk_sql()} AS relapse_risk,
    CASE WHEN relapse_date IS NOT NULL AND end_date >= relapse_date
         THEN date_diff('day', relapse_date, end_date) END::INTEGER AS relapse_os_time,
    CASE WHEN relapse_date IS NOT NULL THEN (death IS NOT NULL)::INTEGER END AS relapse_os_event,
    CASE WHEN relapse_date IS NOT NULL
              AND coalesce(relapse_efs_end, end_date) >= relapse_date
         THEN date_diff('day', relapse_date, coalesce(relapse_efs_end, end_date))
    END::INTEGER AS relapse_efs_time,
    CASE WHEN relapse_date IS NOT NULL THEN (relapse_efs_end IS NOT NULL)::INTEGER END
        AS relapse_efs_event,
    {vrt.vrt_entity_sql()} AS vrt_entity
FROM timed
"""


def followup_missing_sql(outcome: str, schema: str = "store") -> tuple[list[str], str]:
    """(view columns it reads, condition over view row `v`) true for a row a survival analysis
    of `outcome` (os, efs, relapse_os, relapse_efs) leaves out because the patient has neither
    a last contact nor a death date: its time is empty (an event date would still give one)."""
    s = f'"{schema}".' if schema else ""
    time = f"{outcome}_time"
    cond = (
        f'v."{time}" IS NULL AND v.patient_id IN (SELECT patient_id FROM {s}patient '
        "WHERE last_contact_date IS NULL AND death_date IS NULL)"
    )
    if outcome.startswith("relapse_"):  # only relapsed tumours enter: the others are not lost
        return [time, "relapsed"], f"{cond} AND v.relapsed = 1"
    return [time], cond


def set_aside_sql(schema: str = "store") -> str:
    """Condition over view row `v`, true for a row of a child whose linked copy at another
    node represents them in pooled results (the node's `link_group.keep` is false): the rows a
    study with `dedup` on leaves out. The link group's `keep` is decided by the linkage run for
    all its copies at once (docs/dedup.md), so exactly one copy of each child is kept."""
    s = f'"{schema}".' if schema else ""
    return f"v.patient_id IN (SELECT patient_id FROM {s}link_group WHERE NOT keep)"


def has_link_groups(con: Any, schema: str = "store") -> bool:
    """Whether the attached store holds any link group (its `link_group` table exists, store
    version 3, and has a row): a store that never took part in a linkage run answers exactly
    as before, with no set-aside note."""
    (exists,) = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [schema, "link_group"],
    ).fetchall()[0]
    if not exists:
        return False
    (rows,) = con.execute(f'SELECT count(*) FROM "{schema}".link_group').fetchall()[0]
    return bool(rows)


def view_columns(rows: Rows = "tumours") -> list[str]:
    """The columns a view of `rows` has: every tumour variable, and for specimen rows the
    specimen variables too."""
    return [n for n, v in view_variables().items() if rows == "specimens" or v.rows == rows]


def specimen_only(names: list[str] | set[str]) -> list[str]:
    """Those of `names` that exist only on specimen rows (sorted)."""
    known = view_variables()
    return sorted(n for n in names if n in known and known[n].rows == "specimens")


def cohort_sql(
    columns: list[str] | None, where: str, schema: str = "store", rows: Rows = "tumours"
) -> str:
    """SELECT of `columns` (all when None) of the view rows matching `where` (node name first).

    Specimen rows join each tumour's row to its available specimens (`available` true; one
    whose availability is not recorded is not offered), so a cohort filters them as it filters
    tumours and may also filter on the specimen variables."""
    known = view_variables()
    cols = view_columns(rows) if columns is None else columns
    bad = [c for c in cols if c not in known]
    if bad:
        raise SpecError(
            f"not analysis-view variables: {', '.join(bad)} (see `ccdp cohort variables`)"
        )
    select = ", ".join(f'"{c}"' for c in cols)
    if rows == "tumours":
        if specimen_only(cols):
            raise SpecError(
                f"{', '.join(specimen_only(cols))}: a specimen variable, only with unit: specimens"
            )
        return f"SELECT {select} FROM ({view_sql(schema)}) AS v WHERE {where}"
    s = f'"{schema}".' if schema else ""
    return (
        f"SELECT {select} FROM (SELECT t.*, sp.specimen_id, sp.type AS specimen_type "
        f"FROM ({view_sql(schema)}) AS t JOIN {s}specimen sp ON sp.tumour_id = t.tumour_id "
        f"WHERE sp.available) AS v WHERE {where}"
    )


def describe() -> list[dict[str, Any]]:
    """The view's data dictionary as plain records (for docs and `--json`)."""
    return [v.model_dump(by_alias=True) for v in view_variables().values()]


def to_markdown() -> str:
    """The analysis view's dictionary as Markdown (docs/analysis-view.md is generated from it)."""
    lines = [
        "# The analysis view",
        "",
        "One row per tumour, built at each node from its store (`ccdp.cohort.view`). Cohort specs",
        "filter on these variables and analyses group by them; identifiers never leave the node.",
        "Generated by `ccdp cohort variables --format md` from",
        "`src/ccdp/cohort/data/view_variables.yaml`.",
        "",
        "Disclosure classes (see [disclosure.md](disclosure.md)): `categorical` variables group",
        "(by, strata, categorical covariates); `numeric` and `time` variables enter models;",
        "`date` variables filter cohorts; a numeric or date variable is grouped through its band.",
        "",
        "Relapse risk groups of ALL (`relapse_time_band`, `relapse_site_group`,",
        "`bfm_strategic_group`, `relapse_risk`) come from the first relapse of a precursor-cell",
        "leukaemia (ICCC-3 Ia.1) through the rule tables in `src/ccdp/cohort/derived/data/`",
        "(ALL-REZ BFM, Tallen et al., J Clin Oncol 2010; IntReALL SR/HR; sources and checks in",
        "`bfm_strategic_groups.md`). A group is `unknown` when a date, blast count or lineage it",
        "needs is missing, unless every value still possible gives the same group; it is never",
        "guessed. `relapse_timing` (older) instead assumes 24 months of front-line therapy.",
        "",
        "`vrt_entity` names the very rare tumour (EXPeRT/PARTNER) a tumour is, by the first",
        "ICD-O-3 rule of `src/ccdp/cohort/derived/data/vrt_entities.csv` it meets (sources and",
        "assumptions in `vrt_entities.md`); it is empty for every other tumour, as the relapse",
        "groups are empty where they do not apply. See [vrt-report.md](vrt-report.md).",
        "",
        "`specimen_id` and `specimen_type` exist only on specimen rows: a `count` or `crosstab`",
        "with `unit: specimens` reads one row per available biobank specimen of the cohort's",
        "tumours (with every tumour variable beside it) and counts samples; a cell is released",
        "only when its samples come from enough children. See [specimens.md](specimens.md).",
        "",
        "| variable | type | class | description | derivation |",
        "|---|---|---|---|---|",
    ]
    for v in view_variables().values():
        desc = v.description + (" *(identifier: node-only)*" if v.identifier else "")
        klass = v.var_class + (f" (band: `{v.band}`)" if v.band else "")
        if v.var_class == "categorical":
            klass += ", declared levels" if v.levels is not None else ", open levels"
        row = f"| `{v.name}` | {v.type} | {klass} | {desc} | {v.derivation.replace('|', '/')} |"
        lines.append(row)
    return "\n".join(lines)

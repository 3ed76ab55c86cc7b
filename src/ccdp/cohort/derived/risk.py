"""Relapse risk groups of childhood ALL as SQL for the analysis view.

The rules are data (`data/bfm_strategic_groups.csv`, `data/relapse_site_groups.csv`, sources in
`data/bfm_strategic_groups.md`); this module turns them into CASE expressions over the view's base
columns, so that the node derives them in DuckDB with the rest of the view.

A group is given only when the record determines it: a missing date or an unknown immunophenotype
leaves it `unknown`, unless every time band (or lineage) the record still allows gives the same
group (a T-lineage marrow relapse is S4 at any timing). Nothing is guessed.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources
from itertools import product

from ccdp.store.typed import lit

# ICCC-3 extended code of the precursor cell leukaemias (division Ia.1): the ALL that the
# ALL-REZ BFM groups are defined for (terminology/data/iccc_codes.csv).
ALL_EXTENDED = "001"
LINEAGES = ("b_precursor", "t")
SITE_GROUPS = ("isolated_bm", "combined", "isolated_em")
TIME_BANDS = ("very_early", "early", "late")
STRATEGIC_GROUPS = ("S1", "S2", "S3", "S4")
RELAPSE_RISKS = ("SR", "HR")
UNKNOWN = "unknown"
# I-BFM time-band boundaries (calendar months; the boundary day belongs to the later band)
VERY_EARLY_MONTHS = 18
AFTER_FRONTLINE_MONTHS = 6


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("ccdp.cohort.derived").joinpath(f"data/{name}").read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


@cache
def strategic_table() -> dict[tuple[str, str, str], tuple[str, str]]:
    """(lineage, site_group, time_band) -> (strategic group, relapse risk), every cell present."""
    table = {
        (r["lineage"], r["site_group"], r["time_band"]): (r["strategic_group"], r["relapse_risk"])
        for r in _rows("bfm_strategic_groups.csv")
    }
    missing = set(product(LINEAGES, SITE_GROUPS, TIME_BANDS)) - set(table)
    if missing:
        raise ValueError(f"bfm_strategic_groups.csv lacks cells {sorted(missing)}")
    return table


@cache
def site_group_rules() -> list[tuple[str, tuple[str, ...], float | None, float | None]]:
    """(site group, relapse sites, min blasts % inclusive, max blasts % exclusive) in order."""

    def bound(v: str) -> float | None:
        return float(v) if v.strip() else None

    return [
        (
            r["site_group"],
            tuple(r["relapse_sites"].split()),
            bound(r["min_blasts_pct"]),
            bound(r["max_blasts_pct"]),
        )
        for r in _rows("relapse_site_groups.csv")
    ]


def site_group_conditions(site: str, blasts: str) -> dict[str, str]:
    """SQL condition of each site group over a relapse-site and a blast-count expression."""
    out = {}
    for group, sites, lo, hi in site_group_rules():
        parts = [f"{site} IN ({', '.join(lit(s) for s in sites)})"]
        if lo is not None:
            parts.append(f"{blasts} >= {lo:g}")
        if hi is not None:
            parts.append(f"{blasts} < {hi:g}")
        out[group] = " AND ".join(parts)
    return out


def is_all_sql(extended: str = "iccc_extended") -> str:
    return f"{extended} = {lit(ALL_EXTENDED)}"


def site_group_sql(
    relapse_date: str = "relapse_date",
    site: str = "relapse_site",
    blasts: str = "relapse_blasts",
) -> str:
    """relapse_site_group: NULL without a relapse or outside ALL, else a group or `unknown`."""
    whens = "\n".join(
        f"         WHEN {cond} THEN {lit(g)}"
        for g, cond in site_group_conditions(site, blasts).items()
    )
    return (
        f"CASE WHEN {relapse_date} IS NULL OR NOT coalesce({is_all_sql()}, false) THEN NULL\n"
        f"{whens}\n         ELSE {lit(UNKNOWN)} END"
    )


def band_set_sql(
    relapse_date: str = "relapse_date",
    diagnosis_date: str = "diagnosis_date",
    frontline_end: str = "frontline_end_date",
) -> str:
    """The time bands a first relapse may be in, space-separated: one when the dates decide it,
    several when a date it needs is missing (never guessed)."""
    return f"""CASE WHEN {relapse_date} IS NULL THEN NULL
         WHEN {diagnosis_date} IS NULL THEN {lit(" ".join(TIME_BANDS))}
         WHEN {relapse_date} < {diagnosis_date} + INTERVAL {VERY_EARLY_MONTHS} MONTH
             THEN 'very_early'
         WHEN {frontline_end} IS NULL THEN 'early late'
         WHEN {relapse_date} < {frontline_end} + INTERVAL {AFTER_FRONTLINE_MONTHS} MONTH
             THEN 'early'
         ELSE 'late' END"""


def time_band_sql(band_set: str = "_band_set") -> str:
    """relapse_time_band from the band set: the band when it is one, else `unknown`."""
    one = ", ".join(lit(b) for b in TIME_BANDS)
    return (
        f"CASE WHEN {band_set} IN ({one}) THEN {band_set} "
        f"WHEN {band_set} IS NOT NULL THEN {lit(UNKNOWN)} END"
    )


def lineage_set_sql(
    immunophenotype: str = "immunophenotype", morphology: str = "morphology"
) -> str:
    """The lineages an ALL may be: its immunophenotype, else what its morphology names (9837 T
    lymphoblastic; 9836 and 9811-9819 B lymphoblastic), else both."""
    return f"""CASE WHEN {immunophenotype} IN ('b_precursor', 't') THEN {immunophenotype}
         WHEN coalesce({immunophenotype}, 'unknown') <> 'unknown' THEN NULL
         WHEN {morphology} = '9837' THEN 't'
         WHEN {morphology} = '9836' OR {morphology} BETWEEN '9811' AND '9819' THEN 'b_precursor'
         ELSE 'b_precursor t' END"""


def _group_sql(column: int, site_group: str, lineage_set: str, band_set: str) -> str:
    """CASE giving the strategic group (column 0) or relapse risk (column 1) wherever every
    lineage and band the record allows agree; `unknown` otherwise; NULL outside ALL relapses."""
    table = strategic_table()
    lineage_sets = [*LINEAGES, " ".join(LINEAGES)]
    band_sets = [*TIME_BANDS, "early late", " ".join(TIME_BANDS)]
    whens = []
    for ls, sg, bs in product(lineage_sets, SITE_GROUPS, band_sets):
        values = {table[(lin, sg, b)][column] for lin in ls.split() for b in bs.split()}
        if len(values) == 1:
            whens.append(
                f"         WHEN {lineage_set} = {lit(ls)} AND {site_group} = {lit(sg)} "
                f"AND {band_set} = {lit(bs)} THEN {lit(values.pop())}"
            )
    body = "\n".join(whens)
    return f"CASE WHEN {site_group} IS NULL THEN NULL\n{body}\n         ELSE {lit(UNKNOWN)} END"


def strategic_group_sql(
    site_group: str = "relapse_site_group",
    lineage_set: str = "_lineage_set",
    band_set: str = "_band_set",
) -> str:
    return _group_sql(0, site_group, lineage_set, band_set)


def relapse_risk_sql(
    site_group: str = "relapse_site_group",
    lineage_set: str = "_lineage_set",
    band_set: str = "_band_set",
) -> str:
    return _group_sql(1, site_group, lineage_set, band_set)

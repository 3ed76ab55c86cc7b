"""Cohort spec -> SQL; the analysis view and its derived variables."""

from ccdp.cohort.spec import CohortError, CohortSpec, Range
from ccdp.cohort.view import cohort_sql, public_variables, view_sql, view_variables

__all__ = [
    "CohortError",
    "CohortSpec",
    "Range",
    "cohort_sql",
    "public_variables",
    "view_sql",
    "view_variables",
]

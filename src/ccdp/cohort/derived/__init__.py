"""Derived view variables: rule tables (data/) turned into SQL for the analysis view.

They sit on the cohort floor because the view is built from them; the clinical floor above
reads them, never the other way round.
"""

"""ccdp.cohort."""

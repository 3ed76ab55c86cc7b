"""ccdp.report."""

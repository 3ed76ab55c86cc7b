"""ccdp.web."""

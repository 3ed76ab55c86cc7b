"""ccdp.governance."""

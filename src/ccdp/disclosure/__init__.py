"""ccdp.disclosure."""

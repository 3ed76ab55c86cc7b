"""ccdp.store."""

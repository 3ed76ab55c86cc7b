"""ccdp.quality."""

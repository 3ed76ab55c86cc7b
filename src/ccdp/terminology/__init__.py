"""ccdp.terminology."""

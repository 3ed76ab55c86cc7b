"""ccdp.ingest."""

"""ccdp.synth."""

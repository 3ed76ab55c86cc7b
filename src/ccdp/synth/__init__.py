"""Synthetic multi-country childhood cancer registries with known truth (`ccdp synth`)."""

from ccdp.synth.generate import SynthResult, generate

__all__ = ["SynthResult", "generate"]

"""ccdp: the software of an international childhood cancer data partnership."""

__version__ = "0.1.0"

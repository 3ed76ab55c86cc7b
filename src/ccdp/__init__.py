"""ccdp: the software of an international childhood cancer data partnership."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`ccdp.__version__`, read from the installed package's metadata (pyproject.toml is its one
    definition) only when asked, so that importing ccdp stays fast."""
    if name != "__version__":
        raise AttributeError(f"module 'ccdp' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ccdp")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"

"""The `ccdp` command groups, one module per group, over the shared options in `options`.

The top floor but one (only `ccdp.cli` is above it): a command module may import any ccdp
folder, but only inside its functions for anything heavier than typer, so that `ccdp --help`
stays fast (benchmarks/bench_startup.py).
"""

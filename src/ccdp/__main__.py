"""Allow `python -m ccdp` (tests use it to run the CLI from a source tree)."""

from ccdp.cli import main

main()

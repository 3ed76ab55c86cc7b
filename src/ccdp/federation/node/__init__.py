"""The node agent (outward-only connection to the hub), held answers for manual release, and
offline answers as signed result files."""

"""Analyses as plug-ins: a `local` step run by each node and a `combine` step run by the hub."""

"""Record linkage across registries as a protocol: the linkage service (a separate process a
trusted party runs, not the hub), its database and audit chain, and the node's side (secret,
encodings at ingest, a run). The matching itself is `ccdp.linkage`. See docs/linkage.md.
"""

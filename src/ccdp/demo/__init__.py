"""`ccdp demo`: a whole partnership (six registries, hub, node agents, studies) on one machine."""

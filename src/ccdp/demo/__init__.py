"""`ccdp demo`: a whole partnership (six registries, hub, node agents, studies) on one machine.

Its own floor, above federation, report and web (which it drives); nothing but the command
imports it."""

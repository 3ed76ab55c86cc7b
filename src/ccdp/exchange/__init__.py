"""Exchange: the model mapped to and from the standards (FHIR R4, OMOP CDM 5.4, Phenopackets v2,
the CCDI Federation API).

Each format is one module of pure mappings from the model (`fhir`, `omop`, `phenopackets`,
`ccdi`); `source` reads a node store a batch of patients at a time and `output` writes an
export so that nothing half-written is ever left. Exports are patient-level: they are a
custodian's tools, run at the node over its own store, and never travel to the hub (the
`ccdp export` command logs each one in the node's audit). See docs/exchange.md.
"""

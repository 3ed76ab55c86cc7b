"""Clinical groups' work as pure rules: a trial's randomisation (replayable allocation). The
node's workflows over them (randomise, refer) are in ccdp.federation.node, the relapse risk groups
and VRT entities in ccdp.cohort.derived, and the expert board's case summary in ccdp.wire."""

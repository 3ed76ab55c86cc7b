"""Clinical groups' work as pure rules: relapse risk groups, randomisation, the expert board's
case summary, rare-tumour registry. The node's workflows over them (randomise, refer) are in
ccdp.federation.node."""

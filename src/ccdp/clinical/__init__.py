"""Clinical groups' work: relapse risk groups, randomisation, expert board, rare-tumour registry."""

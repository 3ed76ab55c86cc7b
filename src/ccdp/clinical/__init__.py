"""Clinical groups' work: randomisation, expert board, rare-tumour registry."""

"""Clinical groups' services: relapse risk groups, randomisation, expert board, rare tumours."""

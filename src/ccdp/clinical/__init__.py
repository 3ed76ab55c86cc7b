"""Clinical groups' services: relapse risk groups, trial randomisation, expert board, rare tumours."""

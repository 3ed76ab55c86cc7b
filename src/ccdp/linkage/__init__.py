"""Privacy-preserving record linkage: children registered in two countries found without any
identifier leaving a node (Bloom-filter encodings, blocking, Dice comparison, assignment).
See docs/linkage.md."""

"""Every shape that crosses a node's boundary: data and checks only, no I/O."""

"""fedfer bench: the benchmark grid, its runner and its table."""

"""The product's own proof that it works, and how fast: evaluation, scenarios and benchmarks."""

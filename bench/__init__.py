"""Benchmarks: they measure and print (and record in docs/benchmarks.md); they never pass or fail."""

"""Benchmarks: each starts what it measures and prints ratios measured side by side in one run."""

"""Benchmarks of lockgate itself; run them from the repository root, e.g. ``python -m bench.overhead``."""

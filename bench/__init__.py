"""Benchmarks (not timed tests): `python bench/finance_close_bench.py [--quick]`."""

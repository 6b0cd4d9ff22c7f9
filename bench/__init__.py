"""Benchmarks (run as modules, e.g. ``python -m bench.codec``); never part of the test suite."""

"""Benchmarks against the limits of the issue: `python -m bench` (see bench/__main__.py)."""

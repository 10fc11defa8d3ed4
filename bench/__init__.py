"""Benchmarks (`make bench` = `python -m bench.run`): speed and memory as ratios measured in one run."""

"""Benchmarks run by ``rnnlab bench`` and ``make bench``: ratios against baselines timed side
by side in the same process, never wall-clock thresholds."""

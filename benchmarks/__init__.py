"""Benchmarks for the watcher: ratios measured side by side in one run.

Run ``python -m benchmarks --help``. Every timed figure is the watcher's time
divided by a baseline timed in the same repetition, right before and right
after it (the baseline is ``json.loads`` of the same decompressed bytes, or a
small in-memory script), so that a noisy or slow machine changes both sides
alike. Sizes and memory are absolute. Nothing is written into the source tree
except ``benchmarks/results/`` (git-ignored); databases live in a temporary
directory or a PostgreSQL schema of their own, dropped afterwards.
"""

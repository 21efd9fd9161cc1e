"""Evaluation: benchmarks, decoding, prediction store, scoring."""

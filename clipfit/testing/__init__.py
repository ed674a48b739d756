"""Fixture makers for tests, demos and benchmarks: tiny CLIP models and fabricated datasets."""

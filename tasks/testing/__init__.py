"""Helpers for tests of the pipeline tasks (real-data download)."""

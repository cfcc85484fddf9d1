"""Experiment scripts behind docs/perf_notes.md (run each with --help)."""

"""Fuzzing the worker's message path with seeded, bounded malformed jobs."""

"""Evaluation on top of teams: support scenarios checked like a test suite with pass^k (`scenarios`), and
record/replay of model calls (`cassette`)."""

"""Evaluation on top of teams: support scenarios checked like a test suite with pass^k (`scenarios`, the API over
`spec`, `runner`, `checks` and `results`), and record/replay of model calls (`cassette`)."""

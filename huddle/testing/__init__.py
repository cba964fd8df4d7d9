"""Test helpers for huddle and for users' own teams: a scripted OpenAI-compatible HTTP server."""

"""Persistence on disk: durable chat sessions (`sessions`)."""

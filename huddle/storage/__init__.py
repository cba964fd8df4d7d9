"""Persistence on disk: the one SQLite helper (`sqlite`: connection, WAL, lock, schema migrations) and durable chat
sessions (`sessions`)."""

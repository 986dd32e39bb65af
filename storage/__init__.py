"""Durable state: SQLAlchemy models, sessions, migrations and the workspace file layout."""

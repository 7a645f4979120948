"""Alembic migrations of the state store (the only way the schema changes)."""

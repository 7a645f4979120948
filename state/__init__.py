"""The state store: what the reconciler has recorded (SQLite embedded, PostgreSQL in production).

Public entry points: :func:`open_store` -> :class:`SqlStore` (implements
``reconciler.core.ports.StorePort``), :func:`leadership_for` (``LeadershipPort``), and the
migration helpers in :mod:`state.sessions`.
"""

from state.leadership import FileLeadership, PostgresLeadership, leadership_for
from state.sessions import SchemaOutOfDateError
from state.store import SqlStore, open_store

__all__ = [
    "FileLeadership",
    "PostgresLeadership",
    "SchemaOutOfDateError",
    "SqlStore",
    "leadership_for",
    "open_store",
]

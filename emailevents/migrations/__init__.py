"""Alembic migrations for emailevents' own tables; run them with ``emailevents db upgrade``."""

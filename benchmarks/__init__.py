"""Benchmarks: the engine measured side by side with the hand-written task it replaces.

``python -m benchmarks`` runs every section on PostgreSQL + Redis and on the embedded defaults
(SQLite + kombu's ``filesystem://`` transport), workers in processes of their own, and prints a
table and writes JSON; ``--quick`` runs a small version on the embedded defaults only, as a smoke
test. ``docs/performance.md`` holds the latest table and how to read it.
"""

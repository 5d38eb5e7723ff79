"""The webhook receiver of section 8 as a real deployment runs it, in a process of its own:
``emailevents serve --app benchmarks.webapp:events``, its database from
``EMAILEVENTS_BENCH_WEBHOOK_DB`` (JSON: ``url`` and, on PostgreSQL, ``schema``)."""

from __future__ import annotations

import json
import os

from .webhooks import DATABASE_VARIABLE, receiver

__all__ = ["events"]

_database = json.loads(os.environ[DATABASE_VARIABLE])
events = receiver(_database["url"], _database.get("schema"))

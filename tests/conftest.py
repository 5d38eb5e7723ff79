"""Shared fixtures: real databases and the demo world.

Tests that need PostgreSQL (or, later, Redis) skip with a reason on a machine without it, and
fail instead when ``EMAILEVENTS_REQUIRE_SERVICES=1`` (as CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.signals import before_task_publish

from emailevents.store import deliveries
from emailevents.testing import memory_app

POSTGRES_URL = os.environ.get(
    "EMAILEVENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# Property tests run a share of their examples in the default run (the edit-test loop and CI);
# EMAILEVENTS_THOROUGH=1 runs them all (before a release, or on a schedule).
THOROUGH = os.environ.get("EMAILEVENTS_THOROUGH") == "1"
DEFAULT_SHARE = 3


def examples(full: int) -> int:
    """``max_examples`` for a property test whose thorough run tries ``full`` examples."""
    return full if THOROUGH else max(50, full // DEFAULT_SHARE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``thorough`` (a long variant of a test whose other variants run every time)
    are skipped unless EMAILEVENTS_THOROUGH=1; under xdist's worksteal, the slow tests that run
    lead the processes' shares (:func:`slow_first`)."""
    if not THOROUGH:
        skip = pytest.mark.skip(reason="a long variant: EMAILEVENTS_THOROUGH=1 runs it")
        for item in items:
            if item.get_closest_marker("thorough"):
                item.add_marker(skip)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and config.getoption("dist") == "worksteal":
        items[:] = slow_first(items, int(workerinput["workercount"]))


def slow_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered so that each of the ``workers`` contiguous shares worksteal hands out
    first (share i: ``len(pending) // (workers - i)`` of what is left) starts with its part of
    the slow tests, dealt in turn. In collection order the slow tests sit together in one or two
    shares: one process ran them one after the other while the others ran out of quick tests,
    and a long test that started last made the suite wait for it. Stealing takes the end of a
    share, quick tests: the slow ones have started by then."""

    def runs(item: pytest.Item) -> bool:
        return not any(mark.name == "skip" for mark in item.iter_markers())

    slow = [item for item in items if item.get_closest_marker("slow") and runs(item)]
    chosen = {id(item) for item in slow}
    rest = iter(item for item in items if id(item) not in chosen)
    ordered: list[pytest.Item] = []
    left = len(items)
    for share in range(workers):
        size = left // (workers - share)
        part = slow[share::workers]
        ordered += part
        ordered += [next(rest) for _ in range(size - len(part))]
        left -= size
    return ordered + list(rest)  # none left, unless a share is smaller than its slow part


def services_required() -> bool:
    return os.environ.get("EMAILEVENTS_REQUIRE_SERVICES") == "1"


def unavailable(service: str, reason: str) -> None:
    """Skip the test, or fail it when services are required."""
    message = f"{service} is not available: {reason}"
    if services_required():
        pytest.fail(f"{message} (EMAILEVENTS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _postgres_engine(schema: str) -> sa.Engine:
    try:
        import psycopg  # noqa: F401, PLC0415
    except ImportError:
        unavailable("PostgreSQL", "the psycopg driver is not installed (pip install -e '.[dev]')")
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        unavailable("PostgreSQL", str(exc).splitlines()[0])
    finally:
        admin.dispose()
    return sa.create_engine(
        POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A real, empty database: a SQLite file, and PostgreSQL (a fresh schema per test)."""
    if request.param == "sqlite":
        engine = sa.create_engine(
            f"sqlite:///{tmp_path / 'test.sqlite3'}", connect_args={"timeout": 30}
        )
        yield engine
        engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = _postgres_engine(schema)
    yield engine
    engine.dispose()
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file with emailevents' tables, at their newest revision."""
    from emailevents import schema  # noqa: PLC0415

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'emailevents.sqlite3'}")
    schema.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def celery_app() -> Celery:
    return memory_app()


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Every task message published while the test runs (headers and body)."""
    seen: list[dict[str, Any]] = []

    def record(sender: str, headers: dict[str, Any], body: Any, **_: Any) -> None:
        seen.append({"task": sender, "headers": headers, "body": body})

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


def leave_claim(
    factory: Callable[[], Any], event_id: str, event_key: str, recipient: str, *, age: float
) -> None:
    """A ``claimed`` row in the delivery log, as a run that died ``age`` seconds ago (before
    Postmark answered) leaves it."""
    at = datetime.now(UTC) - timedelta(seconds=age)
    with factory() as session:
        session.execute(
            sa.insert(deliveries).values(
                event_id=event_id,
                event_key=event_key,
                recipient=recipient,
                status="claimed",
                reason="claimed",
                detail="",
                claim="a-run-that-died",
                created_at=at,
                updated_at=at,
            )
        )
        session.commit()

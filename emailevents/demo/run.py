"""``emailevents demo``: the whole pipeline on embedded defaults, no service to install.

A SQLite file database seeded with the demo world, a real Celery worker consuming real broker
messages (kombu's in-memory transport, worker threads in this process), the 11 seed events
emitted (one with its org toggle off, one with a missing entity, one fanned out to 31 people),
and every message written as a JSON file.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from ..engine import EmailEvents
from ..outcomes import RunResult
from ..senders.outbox import DirectoryOutbox
from ..testing import Runs, memory_app, worker
from . import hooks, models, seed

__all__ = ["REGISTRY", "DemoReport", "run_demo"]

REGISTRY = Path(__file__).with_name("events.yaml")


@dataclass(frozen=True)
class DemoReport:
    """What the demo did: each emit's result, and where to look."""

    results: list[RunResult]
    outbox: Path
    database: Path
    seconds: float


def run_demo(directory: Path, *, concurrency: int = 2) -> DemoReport:
    """Run the demo in ``directory`` (emptied first) and return its report."""
    started = time.perf_counter()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    database = directory / "demo.sqlite3"
    outbox = directory / "outbox"

    engine = sa.create_engine(f"sqlite:///{database}", connect_args={"timeout": 30})
    models.Base.metadata.create_all(engine)
    session_factory = sessionmaker(engine)
    app = memory_app("emailevents-demo")
    events = EmailEvents(
        REGISTRY,
        celery=app,
        session_factory=session_factory,
        sender=DirectoryOutbox(outbox),
        context={"site_url": hooks.site_url},
        set_default=False,
    )
    events.create_tables(engine)
    with session_factory() as session:
        world = seed.seed(session)
        for org_cuid, toggle_key in seed.toggles_off(world):
            events.set_toggle(session, org_cuid, toggle_key, enabled=False)
        session.commit()

    with Runs() as runs, worker(app, concurrency=concurrency):
        receipts = [events.emit(key, **cuids) for key, cuids in seed.emits(world)]
        results = runs.wait(*receipts, timeout=60)
    engine.dispose()
    return DemoReport(results, outbox, database, time.perf_counter() - started)

"""``emailevents demo``: the whole pipeline on embedded defaults, no service to install.

A SQLite file database seeded with the demo world, a real Celery worker consuming real broker
messages (kombu's in-memory transport, worker threads in this process), the local
Postmark-compatible server, and ``PostmarkSender`` sending to it over HTTP with the real
``postmarker`` client. Each of the 11 seed events is emitted once, one of them twice (see
``seed.emits``): one emit with its org toggle off, one with a missing entity, one fanned out to 31
people through Postmark's batch API. The database stays in the folder afterwards, for
``emailevents explain`` and ``stats`` through ``emailevents.demo.app``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from .. import store
from ..engine import EmailEvents
from ..errors import ConfigurationError
from ..outcomes import RunResult
from ..senders.base import Sender
from ..senders.postmark import PostmarkSender
from ..testing import Runs, memory_app, worker
from ..testing.fake_postmark import FakePostmark, inbox
from . import DEMO_TEMPLATES, hooks, models, seed

__all__ = [
    "DATABASE",
    "DEFAULT_DIRECTORY",
    "DIRECTORY_VARIABLE",
    "MARKER",
    "REGISTRY",
    "DemoReport",
    "demo_events",
    "prepare_directory",
    "run_demo",
    "seed_database",
]

REGISTRY = Path(__file__).with_name("events.yaml")
"""The demo's built-in registry."""
DEFAULT_DIRECTORY = Path("emailevents-demo")
"""The folder ``emailevents demo`` uses unless given ``--dir``."""
DATABASE = "demo.sqlite3"
"""The demo's SQLite database, in its folder."""
DIRECTORY_VARIABLE = "EMAILEVENTS_DEMO_DIR"
"""Where ``emailevents.demo.app`` finds the demo's folder (default: ``DEFAULT_DIRECTORY``)."""
MARKER = ".emailevents-demo"
"""The file that marks a folder as the demo's own: only such a folder is ever cleared."""
# What a run leaves in its folder: all that a later run removes (SQLite may leave its journals).
_OUTPUTS = (
    "demo.sqlite3",
    "demo.sqlite3-journal",
    "demo.sqlite3-wal",
    "demo.sqlite3-shm",
    "messages.html",
    "outbox",
)
DEMO_TOKEN = "emailevents-demo-token"  # noqa: S105 - the local server's made-up token


@dataclass(frozen=True)
class DemoReport:
    """What the demo did: each emit's result, and where to look."""

    results: list[RunResult]
    postmark: FakePostmark
    outbox: Path
    page: Path
    database: Path
    seconds: float


@contextmanager
def run_demo(directory: Path, *, port: int = 0, concurrency: int = 2) -> Iterator[DemoReport]:
    """Run the demo in ``directory`` (see :func:`prepare_directory`); the local Postmark serves
    until the end."""
    started = time.perf_counter()
    prepare_directory(directory)
    database = directory / DATABASE

    engine = sa.create_engine(f"sqlite:///{database}", connect_args={"timeout": 30})
    session_factory, world = seed_database(engine, toggles_off=True)
    app = memory_app("emailevents-demo")
    with FakePostmark(port=port, tokens=(DEMO_TOKEN,), templates=DEMO_TEMPLATES) as postmark:
        sender = PostmarkSender(DEMO_TOKEN, api_url=postmark.url)
        events = demo_events(celery=app, session_factory=session_factory, sender=sender)
        with Runs() as runs, worker(app, concurrency=concurrency):
            receipts = [events.emit(key, **cuids) for key, cuids in seed.emits(world)]
            results = runs.wait(*receipts, timeout=60)
        engine.dispose()

        outbox, page = _save_messages(postmark, directory)
        yield DemoReport(results, postmark, outbox, page, database, time.perf_counter() - started)


def prepare_directory(directory: Path) -> None:
    """Make ``directory`` ready for a run, deleting nothing the demo did not create.

    A new or empty folder is used and marked as the demo's; in a folder the demo marked, the
    previous run's files are removed and anything else is left where it is. Anything else is
    refused: a folder holding files of its own, the current folder, one of its parents, the home
    folder or one of its parents.

    Raises:
        ConfigurationError: the folder is refused; the message says why and what to pass.
    """
    resolved = directory.expanduser().resolve()
    protected = {
        Path.cwd().resolve(): "the current folder",
        Path.home().resolve(): "your home folder",
    }
    for place, what in list(protected.items()):
        for parent in place.parents:
            protected.setdefault(parent, f"a parent of {what}")
    if resolved in protected:
        raise ConfigurationError(
            f"emailevents demo --dir {directory}: refusing {protected[resolved]} ({resolved}); "
            "nothing was touched. Pass a folder of its own, like --dir emailevents-demo"
        )
    if resolved.is_dir() and not (resolved / MARKER).is_file() and any(resolved.iterdir()):
        raise ConfigurationError(
            f"emailevents demo --dir {directory}: {resolved} is not empty and was not made by "
            "the demo; nothing was deleted. Pass a new or empty folder, like "
            "--dir emailevents-demo"
        )
    resolved.mkdir(parents=True, exist_ok=True)
    (resolved / MARKER).write_text(
        "Made by `emailevents demo`: a later run replaces the demo's files here, and only them.\n",
        encoding="utf-8",
    )
    for name in _OUTPUTS:
        output = resolved / name
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        elif output.exists() or output.is_symlink():
            output.unlink()


def demo_events(
    *, celery: Celery, session_factory: Callable[[], Session], sender: Sender, **options: Any
) -> EmailEvents:
    """The demo's registry and context bound to a Celery app, a session factory and a sender.

    ``options`` are further :class:`EmailEvents` settings (``max_retries``, ``claim_timeout``...).
    """
    return EmailEvents(
        REGISTRY,
        celery=celery,
        session_factory=session_factory,
        sender=sender,
        context={"site_url": hooks.site_url},
        set_default=False,
        **options,
    )


def seed_database(
    engine: sa.Engine, *, toggles_off: bool = False
) -> tuple[sessionmaker[Session], seed.DemoWorld]:
    """Create the demo's tables and the engine's, insert the demo world and commit it.

    With ``toggles_off``, the org settings the demo switches off are switched off too.
    """
    models.Base.metadata.create_all(engine)
    store.metadata.create_all(engine)
    session_factory = sessionmaker(engine)
    with session_factory() as session:
        world = seed.seed(session)
        if toggles_off:
            for org_cuid, toggle_key in seed.toggles_off(world):
                store.set_toggle(session, org_cuid, toggle_key, enabled=False)
        session.commit()
    return session_factory, world


def _save_messages(postmark: FakePostmark, directory: Path) -> tuple[Path, Path]:
    """Keep what the local Postmark received: a JSON file per message, and the inbox's page."""
    outbox = directory / "outbox"
    outbox.mkdir()
    for number, message in enumerate(postmark.messages, start=1):
        record = {
            **message.details(),
            "TemplateAlias": message.template_alias,
            "TemplateModel": message.template_model,
        }
        name = f"{number:03d}-{message.tag}-{message.to.replace('@', '_at_')}.json"
        (outbox / name).write_text(json.dumps(record, indent=2), encoding="utf-8")
    page = directory / "messages.html"
    page.write_text(inbox.snapshot(postmark.messages), encoding="utf-8")
    return outbox, page

"""An application written as a module of its own in a test's folder, imported the way the
commands find one (``--app module:events``), and forgotten when the test ends.

A plain module, not a test module: pytest does not rewrite it, so test modules that run server
threads may import it (rewriting a test module imported from another one while threads ran
crashed CPython 3.11.7's AST constructor).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def demo_app(
    db: Path, *, sender: str = "OutboxSender()", options: str = "", tables: bool = True
) -> str:
    """The source of the demo application on the SQLite file ``db``: ``events``, sending with
    ``sender`` (an expression), with ``options`` added to ``EmailEvents(...)``; its tables
    (the demo's and ours) created unless ``tables`` is false."""
    create = "models.Base.metadata.create_all(engine)\n" if tables else ""
    return (
        "import sqlalchemy as sa\n"
        "from sqlalchemy.orm import sessionmaker\n\n"
        "from emailevents import EmailEvents, OutboxSender, PostmarkSender\n"
        "from emailevents.demo import hooks, models\n"
        "from emailevents.demo.run import REGISTRY\n"
        "from emailevents.testing import memory_app\n\n"
        f"engine = sa.create_engine({f'sqlite:///{db}'!r})\n"
        f"{create}"
        "events = EmailEvents(\n"
        "    REGISTRY, celery=memory_app(), session_factory=sessionmaker(engine),\n"
        f"    sender={sender}, context={{'site_url': hooks.site_url}}, set_default=False,"
        f"{options}\n"
        ")\n" + ("events.create_tables(engine)\n" if tables else "")
    )


@contextlib.contextmanager
def app_module(
    folder: Path, source: str, monkeypatch: pytest.MonkeyPatch, *, prefix: str = "app"
) -> Iterator[Any]:
    """``source`` imported as a new module of ``folder`` (its ``ref`` is ``module:events``);
    its ``engine`` disposed and the module forgotten afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(name)
    module.ref = f"{name}:events"
    try:
        yield module
    finally:
        module.engine.dispose()
        sys.modules.pop(name, None)


def own_preferences(session: Any, recipient: str, category: str) -> bool | None:
    """An application's own preferences (``defaults.preferences``): owen@acme.test wants no
    comments; everyone else, the categories' defaults."""
    del session
    return False if (recipient, category) == ("owen@acme.test", "comments") else None

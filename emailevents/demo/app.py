"""The database ``emailevents demo`` left behind, as an application for ``--app``.

``emailevents explain ID --app emailevents.demo.app:events`` and ``emailevents stats --app
emailevents.demo.app:events`` read the demo's delivery log: in the folder named by
``EMAILEVENTS_DEMO_DIR``, else ``emailevents-demo`` (the demo's default ``--dir``) in the current
folder. The demo prints both commands, with the folder it used. Nothing is sent from here: the
sender keeps messages in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from ..errors import ConfigurationError
from ..senders.outbox import OutboxSender
from ..testing import memory_app
from .run import DATABASE, DEFAULT_DIRECTORY, DIRECTORY_VARIABLE, MARKER, demo_events

__all__ = ["directory", "engine", "events"]

directory = Path(os.environ.get(DIRECTORY_VARIABLE) or DEFAULT_DIRECTORY)
if not (directory / MARKER).is_file() or not (directory / DATABASE).is_file():
    raise ConfigurationError(
        f"no demo database in {directory}: run `emailevents demo --dir {directory}` first, or set "
        f"{DIRECTORY_VARIABLE} to the folder the demo used"
    )
engine = sa.create_engine(f"sqlite:///{directory / DATABASE}")
events = demo_events(
    celery=memory_app("emailevents-demo"),
    session_factory=sessionmaker(engine),
    sender=OutboxSender(),
)

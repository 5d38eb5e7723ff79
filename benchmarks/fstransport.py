"""kombu's ``filesystem://`` transport, with each message written atomically.

kombu's own writes a message into its final file name and fills it in place; a consumer that
lists the folder at that moment moves the half-written file away and fails on its JSON, which
stops the worker. Here a message is written under a temporary name the consumer skips and renamed
into place when complete. Importing this module registers it as ``benchfs://``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

__all__ = ["Channel", "Transport"]


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **_: Any) -> None:  # type: ignore[override]
        folder = Path(self.data_folder_out)
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        temporary = folder / f"writing-{uuid.uuid4().hex}.tmp"
        temporary.write_bytes(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
        temporary.replace(folder / name)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES["benchfs"] = f"{__name__}:Transport"

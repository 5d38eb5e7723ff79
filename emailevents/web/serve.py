"""``emailevents serve``: the WSGI app on waitress, a production-grade server in pure Python,
from the ``emailevents[serve]`` extra."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

__all__ = ["serve"]


def serve(app: Callable[..., Any], *, host: str, port: int, threads: int = 8) -> None:
    """Serve the WSGI ``app`` on ``host``:``port`` until interrupted.

    Raises:
        ConfigurationError: waitress is not installed (``pip install 'emailevents[serve]'``).
    """
    try:
        import waitress  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise ConfigurationError(
            "emailevents serve runs on waitress: pip install 'emailevents[serve]'"
        ) from exc
    waitress.serve(app, host=host, port=port, threads=threads, ident="emailevents")

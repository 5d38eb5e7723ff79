"""emailevents: transactional email as a declaration.

Declare each email in ``events.yaml``; :class:`EmailEvents` turns every event into a Celery task
that loads its entities by CUID, checks the org's toggle, builds a validated TemplateModel and
sends it. Call :func:`emit` where the thing happened.
"""

# The public names are imported on first use (PEP 562), not with the package: `emailevents
# --help` and the commands that need neither Celery nor SQLAlchemy start in a tenth of the time.
# `from emailevents import EmailEvents` and `emailevents.EmailEvents` work as before.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import EmailEvents, Receipt, emit
    from .errors import (
        ConfigurationError,
        DeliveryError,
        EmailEventsError,
        EmitArgumentError,
        EmitError,
        EmitValueError,
        ExpressionError,
        Problem,
        RegistryError,
        UnknownCategoryError,
        UnknownEventError,
    )
    from .outcomes import Outcome, Reason, RunResult, Status
    from .registry import BatchSetting, Category, Registry, load_registry
    from .senders import DirectoryOutbox, OutboxSender, PostmarkSender, Sender
    from .tables import metadata

__all__ = [
    "BatchSetting",
    "Category",
    "ConfigurationError",
    "DeliveryError",
    "DirectoryOutbox",
    "EmailEvents",
    "EmailEventsError",
    "EmitArgumentError",
    "EmitError",
    "EmitValueError",
    "ExpressionError",
    "OutboxSender",
    "Outcome",
    "PostmarkSender",
    "Problem",
    "Reason",
    "Receipt",
    "Registry",
    "RegistryError",
    "RunResult",
    "Sender",
    "Status",
    "UnknownCategoryError",
    "UnknownEventError",
    "emit",
    "load_registry",
    "metadata",
]

__version__ = "0.1.0"

# Where each public name lives; tests/test_package.py holds it to the imports above.
_MODULES = {
    "EmailEvents": "engine",
    "Receipt": "engine",
    "emit": "engine",
    "ConfigurationError": "errors",
    "DeliveryError": "errors",
    "EmailEventsError": "errors",
    "EmitArgumentError": "errors",
    "EmitError": "errors",
    "EmitValueError": "errors",
    "ExpressionError": "errors",
    "Problem": "errors",
    "RegistryError": "errors",
    "UnknownCategoryError": "errors",
    "UnknownEventError": "errors",
    "Outcome": "outcomes",
    "Reason": "outcomes",
    "RunResult": "outcomes",
    "Status": "outcomes",
    "BatchSetting": "registry",
    "Category": "registry",
    "Registry": "registry",
    "load_registry": "registry",
    "DirectoryOutbox": "senders",
    "OutboxSender": "senders",
    "PostmarkSender": "senders",
    "Sender": "senders",
    "metadata": "tables",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # looked up once
        return value
    if name.isidentifier() and not name.startswith("_"):
        # `import emailevents` used to import the submodules too: `emailevents.engine` still works.
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the submodule exists and failed to import something else
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

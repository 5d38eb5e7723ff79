"""emailevents: transactional email as a declaration.

Declare each email in ``events.yaml``; :class:`EmailEvents` turns every event into a Celery task
that loads its entities by CUID, checks the org's toggle, builds a validated TemplateModel and
sends it. Call :func:`emit` where the thing happened.
"""

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
    UnknownEventError,
)
from .outcomes import Outcome, Reason, RunResult, Status
from .registry import Registry, load_registry
from .senders import DirectoryOutbox, OutboxSender, PostmarkSender, Sender
from .store import metadata

__all__ = [
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
    "UnknownEventError",
    "emit",
    "load_registry",
    "metadata",
]

__version__ = "0.1.0"

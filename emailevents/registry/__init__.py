"""``events.yaml`` -> a checked, compiled :class:`Registry`.

Loading reports every problem at once, each with file:line:column. Everything is resolved here,
once: entity classes, ``module:attr`` callables, expressions (checked against the SQLAlchemy
mappers) and one pydantic payload model per event. Nothing is imported or parsed per message.

:func:`compile_registry` is the step underneath: it compiles a registry as far as it goes and
returns what compiled with every problem found, instead of raising (``emailevents lint`` reports
them as findings). The compiling is split by what it compiles: :mod:`.specs` (what the file may
say), :mod:`.defaults`, :mod:`.categories`, :mod:`.entities`, :mod:`.events`, their
:mod:`.values`, :mod:`.payload`, :mod:`.digests` (with :mod:`.durations`) and
:mod:`.batching`, sharing
:mod:`.checker` (problems, field validation, ``module:attr`` references); :mod:`.model` holds
what they compile to, :mod:`.loader` puts them together.
"""

from .loader import Compilation, compile_registry, load_registry, parse_registry
from .model import BatchSetting, Category, Digest, EntityType, Event, Expression, Registry
from .specs import ALWAYS, DefaultsSpec, EntitySpec, EventSpec

__all__ = [
    "ALWAYS",
    "BatchSetting",
    "Category",
    "Compilation",
    "DefaultsSpec",
    "Digest",
    "EntitySpec",
    "EntityType",
    "Event",
    "EventSpec",
    "Expression",
    "Registry",
    "compile_registry",
    "load_registry",
    "parse_registry",
]

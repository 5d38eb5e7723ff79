"""What ``events.yaml`` may say: each section's pydantic spec, and the hints for its fields."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

__all__ = [
    "ALWAYS",
    "EVENT_FIELD_HINTS",
    "EVENT_PLACEHOLDERS",
    "FIELD_HINTS",
    "IDENTIFIER",
    "OPTIONAL_SECTIONS",
    "RESERVED_NAMES",
    "SUPPORTED_VERSIONS",
    "TOP_LEVEL",
    "CategorySpec",
    "DefaultsSpec",
    "DigestSpec",
    "EntitySpec",
    "EventSpec",
    "ThrottleSpec",
]

ALWAYS = "always"
SUPPORTED_VERSIONS = (1,)
RESERVED_NAMES = frozenset({"session", "send_at", "event_id", "recipient", "subject"})
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
"""Entity type names, event keys, category keys and template variable names."""

TOP_LEVEL = ("version", "defaults", "categories", "entities", "events")
OPTIONAL_SECTIONS = frozenset({"categories"})


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class DefaultsSpec(_Spec):
    """The ``defaults:`` section."""

    from_: StrictStr = Field(alias="from")
    message_stream: StrictStr = "outbound"
    org: StrictStr = "org"
    toggles: StrictStr | None = None
    preferences: StrictStr | None = None
    category: StrictStr | None = None
    batch: Any = None
    """Every event's ``batch:`` unless it has its own; checked by :mod:`.batching`."""


class CategorySpec(_Spec):
    """One entry of ``categories:``: what recipients choose to receive or not.

    ``title`` is required and not empty; it has a default here so that a missing one is
    reported as the category's own problem (EE064), with the rest of the entry still checked.
    """

    title: StrictStr = ""
    description: StrictStr = ""
    default: StrictBool = True


class EntitySpec(_Spec):
    """One entry of ``entities:``: a mapped class and the column its CUID is in."""

    model: StrictStr
    key: StrictStr = "cuid"


class DigestSpec(_Spec):
    """An event's ``digest:``: its emits to one recipient collected into one message, sent when
    a fixed ``window`` from the first one ends, or daily ``at`` a time of day."""

    window: StrictStr | None = None
    at: StrictStr | None = None
    timezone: StrictStr | None = None
    default_timezone: StrictStr = "UTC"
    template: StrictInt | StrictStr | None = None
    subject: StrictStr | None = None
    single: Literal["plain", "digest"] = "digest"
    group: StrictStr | None = None


class ThrottleSpec(_Spec):
    """An event's ``throttle:``: at most ``limit`` emails to a recipient in any ``per`` (a
    duration), counted for the event alone or, with ``group:``, for every event of the group."""

    limit: StrictInt
    per: StrictStr
    group: StrictStr | None = None


class EventSpec(_Spec):
    """One entry of ``events:``, as written."""

    toggle: StrictStr
    template: StrictInt | StrictStr
    entities: dict[StrictStr, StrictStr]
    subject: StrictStr | None = None
    to: StrictStr | list[StrictStr] | None = None
    recipients: StrictStr | None = None
    data: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    payload: StrictStr | None = None
    build: StrictStr | None = None
    task: StrictStr | None = None
    category: StrictStr | None = None
    critical: StrictBool = False
    throttle: dict[StrictStr, Any] | None = None
    """Checked as a :class:`ThrottleSpec` when the event compiles (its own fields' hints)."""
    digest: DigestSpec | None = None
    batch: Any = None
    """``on``, ``off`` or ``{window_ms, max}``; checked by :mod:`.batching` when it compiles."""

    @field_validator("template", mode="wrap")
    @classmethod
    def _template(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str) or value in ("", 0):
            raise ValueError("must be a Postmark TemplateId (a number) or TemplateAlias (a string)")
        return handler(value)

    @field_validator("to", mode="wrap")
    @classmethod
    def _to(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            return handler(value)
        raise ValueError("must be an expression string or a non-empty list of them")


# Stand-ins for required event fields in error, so the rest of the event is still checked.
EVENT_PLACEHOLDERS = {"toggle": "always", "template": "placeholder", "entities": {}}

# What to write instead, for the fields people most often get wrong.
FIELD_HINTS = {
    "version": f"write `version: {SUPPORTED_VERSIONS[-1]}`",
    "defaults": "at least `from:`, the Postmark From address",
    "entities": "map entity type names to mapped classes, like `User: myapp.models:User`",
    "events": "map event keys to their definitions",
    "categories": "map category keys to `{title: ..., description: ..., default: on}`",
    "from": "like 'Acme <notifications@acme.test>'",
    "toggle": "an org email-settings key like 'artifact_created', or `always`",
    "template": "a Postmark TemplateId (a number) or TemplateAlias (a string)",
    "model": "a mapped class, like 'myapp.models:User'",
    "to": "an expression like '{user.email}', or a list of them",
    "throttle": "like `{limit: 3, per: 1h}`, and `group: NAME` to share the budget across events",
    "limit": "how many emails a recipient gets at most in `per:`, like `limit: 3`",
    "per": "a duration like 30s, 15m, 1h, 2d or 1h30m",
    "digest": "like `{window: 1h, template: weekly-digest}` or "
    '`{at: "09:00", timezone: "{user.timezone}", template: daily-digest}`',
    "window": "a duration like 30m, 1h or 1h30m",
    "at": 'a time of day like "09:00"',
    "single": "plain (a lone item goes as the event's own email) or digest",
    "batch": "`on`, `off`, or a mapping like `{window_ms: 50, max: 500}`; `window_ms: 0` is off",
}
EVENT_FIELD_HINTS = {
    **FIELD_HINTS,
    "entities": "the CUIDs emit() takes, in order, like `{user: User, org: Organization}`",
}

"""Each event's ``digest:``: when a recipient's digest is sent, with which template, and the
groups several events share (docs/timing.md, "Digests")."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import time, timedelta

from ..yamlnodes import Key
from .checker import Checker
from .durations import checked_duration
from .model import Digest, EntityType, Expression
from .specs import IDENTIFIER, DigestSpec, EventSpec
from .values import Values, check_paths, compile_expression

__all__ = ["check_digest_groups", "compile_digest"]

_AT = re.compile(r"([01]\d|2[0-3]):([0-5]\d)\Z")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
SUBJECT_NAMES = frozenset({"count"})
"""What a digest's ``subject:`` may name: ``{count}``, the number of its items."""


def compile_digest(  # noqa: PLR0917 - the event's state, passed along explicitly
    checker: Checker,
    key: str,
    spec: EventSpec,
    path: Key,
    entities: Mapping[str, EntityType],
    names: set[str],
) -> Digest | None:
    """The event's digest; None without one, or with problems (reported)."""
    digest = spec.digest
    if digest is None:
        return None
    where: Key = (*path, "digest")
    if "digest" in checker.invalid.get(path, frozenset()):
        return None
    before = checker.count
    window, at = _when(checker, key, digest, where)
    timezone = _timezone(checker, key, digest, where, entities, names)
    _default_timezone(checker, key, digest, where)
    if digest.template is None:
        checker.problem(
            where,
            f"events.{key}.digest: missing required field 'template'",
            hint="the Postmark template of the digest message (TemplateAlias or TemplateId); "
            "the event's own `template:` stays its single email",
            at_key=True,
            code="EE006",
        )
    _subject(checker, key, digest, where)
    if digest.group is not None and not IDENTIFIER.match(digest.group):
        checker.problem(
            (*where, "group"),
            f"events.{key}.digest.group: '{digest.group}' is not a group name like 'activity'",
            code="EE010",
        )
    if checker.count > before or digest.template is None:
        return None
    return Digest(
        key=digest.group or key,
        template=digest.template,
        window=window,
        at=at,
        timezone=timezone,
        default_timezone=digest.default_timezone,
        subject=digest.subject,
        single_plain=digest.single == "plain",
        group=digest.group,
    )


def _when(
    checker: Checker, key: str, digest: DigestSpec, where: Key
) -> tuple[timedelta | None, time | None]:
    """The digest's ``window`` or daily ``at``."""
    window = at = None
    if (digest.window is None) == (digest.at is None):
        checker.problem(
            where,
            f"events.{key}.digest: give either `window:` or `at:`"
            + (", not both" if digest.window is not None else ""),
            hint="`window: 1h` sends each recipient's digest an hour after its first item; "
            '`at: "09:00"` sends it daily at that time',
            at_key=True,
            code="EE066",
        )
    if digest.window is not None:
        window = checked_duration(checker, (*where, "window"), digest.window, code="EE067")
    if digest.at is not None:
        match = _AT.match(digest.at)
        if match is None:
            checker.problem(
                (*where, "at"),
                f"events.{key}.digest.at: {digest.at!r} is not a time of day",
                hint='write 24-hour HH:MM, quoted, like "09:00"',
                code="EE067",
            )
        else:
            at = time(int(match[1]), int(match[2]))
    return window, at


def _timezone(  # noqa: PLR0917 - the event's state, passed along explicitly
    checker: Checker,
    key: str,
    digest: DigestSpec,
    where: Key,
    entities: Mapping[str, EntityType],
    names: set[str],
) -> Expression | None:
    if digest.timezone is None:
        return None
    if digest.at is None:
        checker.problem(
            (*where, "timezone"),
            f"events.{key}.digest.timezone: only a daily digest (`at:`) has a time zone",
            hint="remove it, or send the digest daily with `at:`",
            code="EE067",
        )
        return None
    expression = compile_expression(
        checker, "digest.timezone", digest.timezone, (*where, "timezone")
    )
    if expression is None:
        return None
    _, context_paths = check_paths(
        checker, Values(None, (), (), (expression,)), dict(entities), names
    )
    for ref in context_paths:
        checker.add(
            expression.problem(
                f"{{{ref}}}: '{ref.root}' is not an entity of event '{key}'",
                ref,
                hint="name an attribute of one of its entities, like {user.timezone}",
                code="EE024",
            )
        )
    return expression if not context_paths else None


def _default_timezone(checker: Checker, key: str, digest: DigestSpec, where: Key) -> None:
    try:
        zoneinfo.ZoneInfo(digest.default_timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        checker.problem(
            (*where, "default_timezone"),
            f"events.{key}.digest.default_timezone: unknown time zone {digest.default_timezone!r}",
            hint="an IANA time zone name, like UTC or Europe/Berlin",
            code="EE067",
        )


def _subject(checker: Checker, key: str, digest: DigestSpec, where: Key) -> None:
    for name in _PLACEHOLDER.findall(digest.subject or ""):
        if name.strip() not in SUBJECT_NAMES:
            checker.problem(
                (*where, "subject"),
                f"events.{key}.digest.subject: {{{name}}} is not known when the digest is sent",
                hint="a digest's subject may name {count}, the number of its items; "
                "each item's own values are in `items`",
                code="EE067",
            )


_SHARED = ("window", "at", "template", "subject", "single", "default_timezone")


def check_digest_groups(checker: Checker, specs: Mapping[str, EventSpec]) -> None:
    """Events sharing a digest ``group`` declare the same digest, and a group is not named like
    an event with a digest of its own (both would fill one digest)."""
    first: dict[str, tuple[str, DigestSpec]] = {}
    for key, spec in specs.items():
        digest = spec.digest
        if digest is None or digest.group is None:
            continue
        where: Key = ("events", key, "digest", "group")
        other = specs.get(digest.group)
        if other is not None and other.digest is not None and other.digest.group is None:
            checker.problem(
                where,
                f"events.{key}.digest.group: '{digest.group}' is the digest of event "
                f"'{digest.group}' already",
                hint="give the group another name, or put that event in it too",
                code="EE068",
            )
        if digest.group not in first:
            first[digest.group] = (key, digest)
            continue
        owner, declared = first[digest.group]
        differ = [f for f in _SHARED if getattr(declared, f) != getattr(digest, f)]
        if spec.category != specs[owner].category:
            differ.append("category")
        if differ:
            checker.problem(
                where,
                f"events.{key}.digest: group '{digest.group}' is declared differently by event "
                f"'{owner}' ({', '.join(differ)})",
                hint="events sharing a digest give it the same window or time, template, "
                "subject and single, and have the same category",
                code="EE068",
            )

"""Recipients' own choices: each recipient's preference per category, and every statement on
``emailevents_preferences``.

A row exists only where a choice was made (a one-click unsubscribe, the preferences page,
support staff); without one, the category's ``default`` applies. A run checks, in this order,
the org toggle (``toggle_off``), the suppression list (``suppressed``), then the preference of
each recipient of an event that has a category and is not ``critical`` (``opted_out``, with the
category and when and how it was chosen).

Applications that keep preferences in their own tables name a callable instead
(``defaults.preferences`` in the registry): it is asked ``(session, recipient, category)`` and
answers ``True`` (send), ``False`` (opted out) or ``None`` (the category's default).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .errors import ConfigurationError, UnknownCategoryError
from .tables import current_time, in_chunks, preferences

__all__ = [
    "How",
    "Preference",
    "Preferences",
    "PreferencesCallable",
    "choices",
    "choose",
    "chosen_for",
    "opted_out",
    "switched_off",
]

PreferencesCallable = Callable[[Session, str, str], bool | None]
"""``(session, recipient, category) -> True | False | None``: an application's own store."""


class How(StrEnum):
    """How a choice was made."""

    ONE_CLICK = "one_click"
    """The List-Unsubscribe header's one-click POST (RFC 8058), or the link's confirmation."""
    PAGE = "page"
    """The preferences page."""
    SUPPORT = "support"
    """Support staff (``emailevents preferences set``)."""
    API = "api"
    """The application (``events.preferences.set``)."""
    DEFAULT = "default"
    """Nobody chose: the category's default."""
    APPLICATION = "application"
    """The application's own preferences callable."""


_SAID = {
    How.ONE_CLICK.value: "one-click unsubscribe",
    How.PAGE.value: "the preferences page",
    How.SUPPORT.value: "support staff",
    How.API.value: "the application",
}


@dataclass(frozen=True)
class Preference:
    """A recipient's preference for one category: whether it is sent, and how that came to be."""

    recipient: str
    category: str
    enabled: bool
    how: str
    changed_at: datetime | None = None
    detail: str = ""

    def describe(self) -> str:
        """Why it is (not) sent, in a sentence (the detail of an ``opted_out`` outcome)."""
        state = "on" if self.enabled else "off"
        if self.how == How.DEFAULT:
            return f"category {self.category!r} is {state} by default and was never switched"
        if self.how == How.APPLICATION:
            return f"the application's preferences say category {self.category!r} is {state}"
        when = "" if self.changed_at is None else f" on {self.changed_at:%Y-%m-%d %H:%M:%S} UTC"
        how = _SAID.get(self.how, self.how)
        found = f"category {self.category!r} switched {state}{when} by {how}"
        return found + (f" ({self.detail})" if self.detail else "")

    def document(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "category": self.category,
            "enabled": self.enabled,
            "how": self.how,
            "changed_at": None if self.changed_at is None else self.changed_at.isoformat(),
            "detail": self.detail,
        }


def choose(
    session: Session,
    recipient: str,
    category: str,
    *,
    enabled: bool,
    how: How,
    detail: str = "",
) -> Preference:
    """Record ``recipient``'s choice for ``category`` (not committed); the preference kept."""
    row = {
        "recipient": recipient.strip().lower(),
        "category": category,
        "enabled": enabled,
        "how": how.value,
        "detail": detail[:1000],
        "changed_at": current_time(),
    }
    dialect = session.get_bind().dialect.name
    if dialect in {"postgresql", "sqlite"}:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(preferences).values(**row)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[preferences.c.recipient, preferences.c.category],
                set_={k: v for k, v in row.items() if k not in {"recipient", "category"}},
            )
        )
    else:
        where = (preferences.c.recipient == row["recipient"]) & (preferences.c.category == category)
        updated = session.execute(sa.update(preferences).where(where).values(**row))
        if not getattr(updated, "rowcount", 0):
            session.execute(sa.insert(preferences).values(**row))
    return _preference(row)


def choices(session: Session, recipient: str) -> dict[str, Preference]:
    """Category -> ``recipient``'s own choice (the categories it never chose are absent)."""
    rows = session.execute(
        sa.select(preferences).where(preferences.c.recipient == recipient.strip().lower())
    ).mappings()
    return {row["category"]: _preference(row) for row in rows}


def switched_off(session: Session) -> dict[str, int]:
    """Category -> how many recipients have switched it off (in our table)."""
    rows = session.execute(
        sa.select(preferences.c.category, sa.func.count().label("recipients"))
        .where(sa.not_(preferences.c.enabled))
        .group_by(preferences.c.category)
    )
    return {row.category: row.recipients for row in rows}


def opted_out(
    session: Session,
    recipients: Sequence[str],
    category: str,
    *,
    default: bool,
    application: PreferencesCallable | None = None,
    chosen: Mapping[str, Preference] | None = None,
) -> dict[str, Preference]:
    """Those of ``recipients`` (lowercased keys) that are not to get mail of ``category``: by
    the application's callable when given, else by their choice, else by ``default``.
    ``chosen``: the choices read already (:func:`chosen_for`, for a batch's recipients)."""
    if not recipients:
        return {}
    if application is not None:
        found: dict[str, Preference] = {}
        for recipient in recipients:
            answer = application(session, recipient, category)
            if answer is None:
                answer, how = default, How.DEFAULT
            else:
                how = How.APPLICATION
            if not answer:
                found[recipient] = Preference(recipient, category, enabled=False, how=how.value)
        return found
    if chosen is None:
        chosen = chosen_for(session, recipients, category)
    found = {}
    for recipient in recipients:
        preference = chosen.get(recipient) or Preference(
            recipient, category, default, How.DEFAULT.value
        )
        if not preference.enabled:
            found[recipient] = preference
    return found


def chosen_for(session: Session, recipients: Iterable[str], category: str) -> dict[str, Preference]:
    """The choices in our table of those of ``recipients`` who made one for ``category``: one
    statement per ``tables.IN_LIST`` recipients."""
    found: dict[str, Preference] = {}
    for chunk in in_chunks(recipients):
        rows = session.execute(
            sa.select(preferences).where(
                preferences.c.category == category, preferences.c.recipient.in_(chunk)
            )
        ).mappings()
        found.update((row["recipient"], _preference(row)) for row in rows)
    return found


def _preference(row: Mapping[str, Any] | sa.RowMapping) -> Preference:
    changed = row["changed_at"]
    if changed is not None and changed.tzinfo is None:
        changed = changed.replace(tzinfo=UTC)
    return Preference(
        row["recipient"], row["category"], row["enabled"], row["how"], changed, row["detail"]
    )


class Declared(Protocol):
    """A category as the registry declares it (:class:`emailevents.registry.Category`)."""

    @property
    def title(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def default(self) -> bool: ...


class Preferences:
    """``events.preferences``: each recipient's choice per declared category.

    Args:
        session_factory: opens a session on the application's database.
        categories: the registry's categories, by key.
        application: the application's own preferences callable, when it keeps them itself
            (then :meth:`set` refuses: the choices are the application's to write).
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        categories: Mapping[str, Declared],
        application: PreferencesCallable | None = None,
    ) -> None:
        self._sessions = session_factory
        self.categories = categories
        self._application = application

    def get(self, recipient: str) -> dict[str, Preference]:
        """Category -> whether ``recipient`` gets its mail, and how that came to be: its own
        choice, the application's answer, or the category's default."""
        key = recipient.strip().lower()
        with self._sessions() as session:
            chosen = {} if self._application else choices(session, key)
            found: dict[str, Preference] = {}
            for name, category in self.categories.items():
                answer = self._application(session, key, name) if self._application else None
                if name in chosen:
                    found[name] = chosen[name]
                elif answer is not None:
                    found[name] = Preference(key, name, answer, How.APPLICATION.value)
                else:
                    found[name] = Preference(key, name, category.default, How.DEFAULT.value)
        return found

    def set(
        self,
        recipient: str,
        category: str,
        *,
        enabled: bool,
        how: How = How.API,
        detail: str = "",
    ) -> Preference:
        """Record ``recipient``'s choice for ``category``, and commit.

        Raises:
            UnknownCategoryError: the registry declares no such category.
            ConfigurationError: the application keeps preferences in its own tables.
        """
        return self.set_many(recipient, {category: enabled}, how=how, detail=detail)[category]

    def set_many(
        self,
        recipient: str,
        enabled: Mapping[str, bool],
        *,
        how: How = How.API,
        detail: str = "",
    ) -> dict[str, Preference]:
        """Record ``recipient``'s choice for each category in ``enabled``, in one transaction.

        Raises:
            UnknownCategoryError: the registry declares no such category (nothing recorded).
            ConfigurationError: the application keeps preferences in its own tables.
        """
        for category in enabled:
            self._check(category)
        with self._sessions() as session:
            kept = {
                category: choose(session, recipient, category, enabled=on, how=how, detail=detail)
                for category, on in enabled.items()
            }
            session.commit()
        return kept

    def _check(self, category: str) -> None:
        """Refuse an undeclared ``category``, or any write when the application keeps them."""
        if category not in self.categories:
            close = difflib.get_close_matches(category, list(self.categories), n=1)
            known = ", ".join(sorted(self.categories)) or "none: declare categories: in events.yaml"
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownCategoryError(
                f"no category {category!r} in the registry: {hint}the categories are {known}"
            )
        if self._application is not None:
            raise ConfigurationError(
                "this application keeps preferences in its own tables (defaults.preferences in "
                "its registry): change them there"
            )

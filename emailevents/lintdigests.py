"""Lint's checks of digest templates at Postmark: the digest template of each event with a
``digest:`` exists (EE050), lists the emits with ``{{#each items}}`` (EE069), and uses only what
a digest provides (EE072): in each item, the event's own variables; around them, ``count``,
``subject`` (when the digest declares one) and the recipient's links (an event with a category).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .registry import Event
from .tokens import LINK_VARIABLES

__all__ = ["check", "provided", "wanted"]


class Add(Protocol):
    """Lint's way to report a finding at a place in the registry."""

    def __call__(
        self, code: str, path: tuple[str | int, ...], message: str, *, hint: str = ""
    ) -> None: ...


def provided(event: Event) -> frozenset[str]:
    """The variables a digest of ``event`` provides around its items."""
    assert event.digest is not None  # noqa: S101 - digest events only
    names = {"items", "count"} | ({"subject"} if event.digest.subject is not None else set())
    if event.category is not None:
        names |= set(LINK_VARIABLES)
    return frozenset(names)


def wanted(
    add: Add,
    events: Iterable[Event],
    templates: tuple[Mapping[Any, Mapping[str, Any]], Mapping[Any, Mapping[str, Any]]],
    url: str,
) -> dict[str, Mapping[str, Any]]:
    """Each digest template named, as Postmark lists it (``templates``: by id, by alias);
    EE050 for one it does not hold."""
    by_id, by_alias = templates
    found: dict[str, Mapping[str, Any]] = {}
    for event in events:
        if event.digest is None:
            continue
        ref = event.digest.template
        summary = by_id.get(ref) if isinstance(ref, int) else by_alias.get(ref)
        if summary is None:
            kind = "TemplateId" if isinstance(ref, int) else "TemplateAlias"
            add(
                "EE050",
                ("events", event.key, "digest", "template"),
                f"events.{event.key}.digest.template: Postmark at {url} has no template with "
                f"{kind} {ref!r}",
                hint="create it, or name one of the server's templates",
            )
            continue
        found[str(ref)] = summary
    return found


def check(
    add: Add,
    events: Iterable[Event],
    suggested: Mapping[str, Any],
    item_names: Callable[[Event], frozenset[str]],
) -> None:
    """EE069, EE072 for each digest template's SuggestedTemplateModel (``suggested``, by
    template); ``item_names``: the variables an emit of the event provides."""
    for event in events:
        if event.digest is None or str(event.digest.template) not in suggested:
            continue
        model = suggested[str(event.digest.template)]
        where = ("events", event.key, "digest", "template")
        label = f"events.{event.key}.digest: template {event.digest.template!r}"
        items = model.get("items")
        if not isinstance(items, list):
            how = (
                "never lists the items"
                if items is None
                else "uses {{#items}} as a section, which tests it and does not iterate"
                if isinstance(items, dict)
                else "prints {{items}} as one value"
            )
            add(
                "EE069",
                where,
                f"{label} {how}: a digest's emits are in the list `items`",
                hint="list them with {{#each items}}...{{/each}}",
            )
        else:
            inner = items[0] if items and isinstance(items[0], dict) else {}
            for name in sorted(set(inner) - item_names(event)):
                add(
                    "EE072",
                    where,
                    f"{label} uses {{{{{name}}}}} in each item, which event '{event.key}' "
                    "does not provide: it would render empty",
                    hint=f"add `{name}:` under the event's data, or remove it from the template",
                )
        for name in sorted(set(model) - provided(event)):
            add(
                "EE072",
                where,
                f"{label} uses {{{{{name}}}}}, which a digest does not provide: it would "
                "render empty",
                hint="a digest provides "
                + ", ".join(sorted(provided(event)))
                + "; each emit's own variables are in `items`",
            )

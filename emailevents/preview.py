"""``emailevents preview``: the TemplateModel a task would build, and the email Postmark renders.

:func:`preview` loads the real entities and builds the TemplateModel with the pipeline's own steps
(:mod:`emailevents.pipeline`), so what it shows is what the task would send. :func:`preview_sample`
needs no database: it fills the event's values with samples of their columns' types.
:func:`render` has Postmark render a template with a TemplateModel through ``/templates/validate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import digestsend, pipeline
from .engine import bind_cuids, find_event
from .errors import PreviewError, Stopped
from .registry import Event, Registry
from .samples import sample_recipients, sample_template_model
from .senders.postmark_templates import PostmarkTemplates

if TYPE_CHECKING:
    from .engine import EmailEvents
    from .senders.postmark import PostmarkSender

__all__ = [
    "DIGEST_ITEMS",
    "Preview",
    "PreviewError",
    "Rendered",
    "as_digest",
    "preview",
    "preview_sample",
    "render",
]

DIGEST_ITEMS = 3
"""How many items a digest preview shows (``emailevents preview --digest``)."""


@dataclass(frozen=True)
class Preview:
    """What a task run would send: to whom, and the TemplateModel."""

    event_key: str
    template: int | str
    recipients: tuple[str, ...]
    template_model: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    sample: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event_key,
            "template": self.template,
            "sample": self.sample,
            "recipients": list(self.recipients),
            "notes": list(self.notes),
            "TemplateModel": dict(self.template_model),
        }


@dataclass(frozen=True)
class Rendered:
    """A template rendered by Postmark: ``None`` for a part the template does not have."""

    subject: str | None
    text: str | None
    html: str | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "Subject": self.subject,
            "TextBody": self.text,
            "HtmlBody": self.html,
            "notes": list(self.notes),
        }


def as_digest(event: Event, shown: Preview, items: int = DIGEST_ITEMS) -> Preview:
    """The digest message ``shown``'s emit would go out in: its digest template, and a
    TemplateModel of ``items`` items, each ``shown``'s TemplateModel (docs/timing.md).

    Raises:
        PreviewError: the event has no digest.
    """
    if event.digest is None:
        raise PreviewError(f"event '{event.key}' has no digest: preview it without --digest")
    model = digestsend.model(event.digest, [(event.key, "", dict(shown.template_model))] * items)
    note = f"a digest of {items} items, each this emit's TemplateModel (its emits are in `items`)"
    return Preview(
        event.key,
        event.digest.template,
        shown.recipients,
        model,
        (*shown.notes, note),
        shown.sample,
    )


def preview(events: EmailEvents, event_key: str, cuids: Mapping[str, str]) -> Preview:
    """Build ``event_key``'s recipients and TemplateModel for real entities, as its task would.

    The steps are the pipeline's own. Nothing is claimed, sent or recorded, and the session is
    rolled back. A toggle that is off, or recipients that resolve to nobody, would make the task
    skip the email: the preview says so in its notes and still shows the TemplateModel.

    Raises:
        UnknownEventError: no such event.
        EmitArgumentError: ``cuids`` do not match the event's entities.
        PreviewError: an entity does not exist, or the TemplateModel would be invalid.
    """
    event = events.event(event_key)
    bound = bind_cuids(event, (), cuids)
    notes: list[str] = []
    rt = events.runtime
    with events.session_factory() as session:
        try:
            try:
                entities = pipeline.load_entities(session, event, bound)
            except Stopped as stop:
                raise PreviewError(
                    f"the task would skip this email: {stop.outcome.detail}"
                ) from stop
            try:
                pipeline.check_toggle(rt, session, event, entities)
            except sa.exc.SQLAlchemyError as exc:
                session.rollback()
                notes.append(f"the toggle could not be read: {str(exc).splitlines()[0]}")
            except Stopped as stop:
                notes.append(f"the task would skip this email: {stop.outcome.detail}")
            values = {**entities, **pipeline.context_values(rt, session, event, entities)}
            recipients: list[str] = []
            try:
                found, rejected = pipeline.resolve_recipients(session, event, values)
            except Stopped as stop:
                notes.append(f"the task would skip this email: {stop.outcome.detail}")
            else:
                recipients = [r.address for r in found]
                notes += [f"not a recipient: {o.recipient}: {o.detail}" for o in rejected]
            try:
                model = pipeline.build_template_model(session, event, values)
            except Stopped as stop:
                raise PreviewError(f"the task would fail: {stop.outcome.detail}") from stop
        finally:
            session.rollback()
    return Preview(event.key, event.template, tuple(recipients), model, tuple(notes))


def preview_sample(registry: Registry, event_key: str) -> Preview:
    """``event_key``'s TemplateModel with sample values, without a database.

    Raises:
        UnknownEventError: no such event.
    """
    event = find_event(registry, event_key)
    model, notes = sample_template_model(event)
    return Preview(
        event.key,
        event.template,
        tuple(sample_recipients(event)),
        model,
        ("sample values, not data from a database", *notes),
        sample=True,
    )


def render(
    sender: PostmarkSender, template: int | str, template_model: Mapping[str, Any]
) -> Rendered:
    """Have Postmark render ``template`` with ``template_model`` (``GET /templates/{ref}``, then
    ``POST /templates/validate``).

    Raises:
        PreviewError: Postmark has no such template.
        ConfigurationError: the token was rejected, or Postmark cannot be reached
            (:class:`~emailevents.lint.PostmarkUnreachableError`).
    """
    api = PostmarkTemplates(sender)
    details = api.template(template)
    if details is None:
        raise PreviewError(f"Postmark at {api.url} has no template {template!r}")
    notes: list[str] = []
    if details.get("Active") is False:
        notes.append(f"template {template!r} is inactive: Postmark would refuse to send it")
    answer = api.validate(details, template_model)

    def part(name: str) -> str | None:
        item = answer.get(name)
        if not isinstance(item, Mapping):
            return None
        notes.extend(
            f"{name}: line {error.get('Line')}: {error.get('Message')}"
            for error in item.get("ValidationErrors") or []
        )
        content = item.get("RenderedContent")
        return content if isinstance(content, str) else None

    return Rendered(part("Subject"), part("TextBody"), part("HtmlBody"), tuple(notes))

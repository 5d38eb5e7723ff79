"""The commands that read back what happened: ``explain`` and ``stats``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from .common import app_option, complete_events, echo_json, format_option, load_app, table

if TYPE_CHECKING:
    from ..engine import EmailEvents
    from ..store import Count, Explanation
    from ..timeline import Engagement, Life


@click.command()
@click.argument("event_id")
@app_option
@format_option("json", help="A table, or one JSON document (docs/operations.md).")
def explain(event_id: str, app_ref: str, fmt: str) -> None:
    """Every recipient's outcome for one emit, and why; then each one's whole life: queued,
    sent, and what Postmark's webhooks said (delivered, bounced, opened, ...)."""
    from .. import digests, store, timeline  # noqa: PLC0415

    events = load_app(app_ref)
    with events.session_factory() as session:
        explanation = store.explain(session, event_id)
        lives = timeline.explain(session, event_id)
        digested = digests.fates(session, event_id)
    if explanation.emit is None and not explanation.deliveries:
        raise click.ClickException(
            f"nothing is recorded for event id {event_id}: it was never emitted through "
            "this database, or the worker has not run it yet"
        )
    if fmt == "json":
        echo_json(_explanation_document(event_id, explanation, lives, digested))
        return
    if explanation.emit is not None:
        emit = explanation.emit
        emitted = f"{emit.created_at:%Y-%m-%d %H:%M:%S}"
        click.echo(f"event {emit.event_key}, id {event_id}: emitted {emitted}; {_state(emit)}")
    if not explanation.deliveries:
        state = str(explanation.emit.state) if explanation.emit is not None else ""
        click.echo(
            _NOTHING_YET.get(state, "no outcome recorded yet: the worker has not run this emit")
        )
        return
    key = explanation.deliveries[0].event_key
    if explanation.emit is None:
        click.echo(f"event {key}, id {event_id}")
    rows = [
        (
            d.recipient or "(the whole emit)",
            d.status,
            d.reason,
            digested.get(d.recipient) or d.message_id or d.detail or "",
            f"{d.updated_at:%Y-%m-%d %H:%M:%S}",
        )
        for d in explanation.deliveries
    ]
    click.echo(
        table(("Recipient", "Status", "Reason", "Message ID / why", "At"), rows, colour_column=1)
    )
    for life in lives.values():
        if life.recipient:
            click.echo(f"\n{life.recipient}: {life.state}")
            for step in life.steps:
                at = f"{step.at:%Y-%m-%d %H:%M:%S}" if step.at is not None else "-"
                click.echo(f"  {at}  {step.what}{_step_detail(step.what, step.detail)}")


_NOTHING_YET = {
    "scheduled": "nothing sent yet: the relay publishes it when it is due",
    "cancelled": "nothing sent: it was cancelled before the relay published it",
}


def _state(emit: Any) -> str:
    """An emit row's state in words: pending and why, scheduled for when, cancelled when."""
    state = str(emit.state)
    scheduled = f"scheduled for {_utc(emit.send_at)}" if emit.send_at is not None else ""
    if state == "pending":
        state += f" (not published yet; {emit.attempts} failed publish(es)"
        state += f", last: {emit.last_error})" if emit.last_error else ")"
        return f"{state}; {scheduled}" if scheduled else state
    if state == "scheduled":
        return f"{scheduled} (not published yet; `emailevents cancel` takes it back until then)"
    if state == "cancelled":
        return f"cancelled at {_utc(emit.cancelled_at)} ({scheduled}; never published)"
    return f"{state} ({scheduled})" if scheduled else state


def _utc(moment: datetime | None) -> str:
    """A time as the tables hold it (UTC), for a person."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "-"


def _step_detail(what: str, detail: Any) -> str:
    """What a timeline step adds to its name, in a few words."""
    match what:
        case "sent":
            text = detail.get("message_id")
        case "bounced":
            text = f"{detail.get('type')}: {detail.get('description')}"
        case "complained":
            text = detail.get("type")
        case "clicked":
            text = detail.get("link")
        case "unsubscribed" | "failed" | "skipped":
            text = detail.get("reason")
        case _:
            text = None
    return f" ({text})" if text else ""


def _explanation_document(
    event_id: str,
    explanation: Explanation,
    lives: dict[str, Life],
    digested: Mapping[str, str],
) -> dict[str, Any]:
    emit = explanation.emit
    return {
        "event_id": event_id,
        "event": emit.event_key if emit is not None else explanation.deliveries[0].event_key,
        "emit": None
        if emit is None
        else {
            "state": emit.state,
            "attempts": emit.attempts,
            "last_error": emit.last_error,
            "created_at": _timestamp(emit.created_at),
            "published_at": _timestamp(emit.published_at),
            "send_at": _timestamp(emit.send_at),
            "cancelled_at": _timestamp(emit.cancelled_at),
        },
        "deliveries": [
            {
                "recipient": d.recipient,
                "status": d.status,
                "reason": d.reason,
                "detail": d.detail,
                "message_id": d.message_id,
                "created_at": _timestamp(d.created_at),
                "updated_at": _timestamp(d.updated_at),
                **_life_document(lives.get(d.recipient.lower())),
                **({"digest": digested[d.recipient]} if d.recipient in digested else {}),
            }
            for d in explanation.deliveries
        ],
    }


def _life_document(life: Life | None) -> dict[str, Any]:
    if life is None:
        return {"state": None, "timeline": []}
    return {
        "state": life.state,
        "timeline": [
            {"what": step.what, "at": _timestamp(step.at), "detail": dict(step.detail)}
            for step in life.steps
        ],
    }


@click.command()
@app_option
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="The time window: a number and a unit, like 30m, 24h or 7d.",
)
@click.option(
    "--event",
    "event_key",
    default=None,
    shell_complete=complete_events,
    help="Only this event.",
)
@format_option("json", help="A table, or one JSON document (docs/operations.md).")
def stats(app_ref: str, since: str, event_key: str | None, fmt: str) -> None:
    """Outcomes, bounces and complaints per event.

    Over a time window: the outcomes per event, status and reason; then, per event, how many of
    the messages sent were delivered, bounced and complained about (Postmark's webhooks), with a
    warning where a rate is above what Postmark and the inbox providers accept.
    """
    from .. import preferences, store, timeline  # noqa: PLC0415

    window = _duration(since)
    events = load_app(app_ref)
    start = datetime.now(UTC) - window
    with events.session_factory() as session:
        counts = store.stats(session, since=start, event_key=event_key)
        engagement = timeline.engagement(session, since=start, event_key=event_key)
        switched_off = preferences.switched_off(session) if events.registry.categories else {}
    opt_outs = _opt_outs(events, counts, switched_off)
    if fmt == "json":
        echo_json(
            {
                "since": since,
                "from": _timestamp(start),
                "event": event_key,
                "counts": [
                    {"event": c.event_key, "status": c.status, "reason": c.reason, "count": c.count}
                    for c in counts
                ],
                "engagement": [_engagement_document(e) for e in engagement],
                "opt_outs": opt_outs,
            }
        )
        return
    if not counts:
        click.echo(f"no outcomes recorded in the last {since}")
        return
    rows = [(c.event_key, c.status, c.reason, str(c.count)) for c in counts]
    click.echo(table(("Event", "Status", "Reason", "Count"), rows, colour_column=1))
    if engagement:
        click.echo("\n" + _engagement_text(engagement, since))
    if opt_outs:
        rows = [
            (o["category"], o["title"], str(o["switched_off"]), str(o["skipped"])) for o in opt_outs
        ]
        headers = ("Category", "Title", "Switched off (now)", f"Skipped opted_out ({since})")
        click.echo("\n" + table(headers, rows))


def _opt_outs(
    events: EmailEvents, counts: Sequence[Count], switched_off: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Per declared category: the recipients who switched it off, and the recipients skipped
    as ``opted_out`` in the window (its events' outcomes)."""
    skipped: dict[str, int] = {}
    for count in counts:
        event = events.events.get(count.event_key)
        if count.reason == "opted_out" and event is not None and event.category is not None:
            skipped[event.category] = skipped.get(event.category, 0) + count.count
    return [
        {
            "category": key,
            "title": category.title,
            "switched_off": switched_off.get(key, 0),
            "skipped": skipped.get(key, 0),
        }
        for key, category in events.registry.categories.items()
    ]


def _engagement_text(engagement: Sequence[Engagement], since: str) -> str:
    """The table of what the webhooks said, and a line per rate above the limits."""
    sent = sum(e.sent for e in engagement)
    if not any(e.recorded for e in engagement):
        return (
            f"delivered, bounced, complained: no webhook record about the {sent} message"
            f"{'s' if sent != 1 else ''} sent in the last {since};\n"
            "these counts need Postmark's webhooks (docs/webhooks.md)"
        )

    def share(e: Engagement, count: int, places: int = 1) -> str:
        # Zeros where no record came would read as "nothing delivered": a dash says "not known".
        return f"{count} ({e.rate(count):.{places}%})" if e.recorded else "-"

    rows = [
        (
            e.event_key,
            str(e.sent),
            share(e, e.delivered),
            share(e, e.bounced),
            share(e, e.hard_bounced),
            share(e, e.complained, 2),
        )
        for e in engagement
    ]
    header = ("Event", "Sent", "Delivered", "Bounced", "Hard bounced", "Complained")
    lines = [table(header, rows)]
    if not all(e.recorded for e in engagement):
        lines.append("-: no webhook record about the event's messages yet")
    lines += [f"warning: {e.event_key}: {w}" for e in engagement for w in e.warnings]
    return "\n".join(lines)


def _engagement_document(e: Engagement) -> dict[str, Any]:
    return {
        "event": e.event_key,
        "sent": e.sent,
        "recorded": e.recorded,
        "delivered": e.delivered,
        "bounced": e.bounced,
        "hard_bounced": e.hard_bounced,
        "complained": e.complained,
        "delivery_rate": e.rate(e.delivered),
        "bounce_rate": e.bounce_rate,
        "complaint_rate": e.complaint_rate,
        "warnings": e.warnings,
    }


def _duration(text: str) -> timedelta:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    try:
        return timedelta(**{units[unit]: float(number)})
    except (KeyError, ValueError):
        raise click.BadParameter(
            f"{text!r} is not a duration like 30m, 24h or 7d", param_hint="--since"
        ) from None


def _timestamp(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; the engine writes UTC, and SQLite gives it back without a zone."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()

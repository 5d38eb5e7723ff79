"""``cancel``: take back a scheduled emit before the relay publishes it."""

from __future__ import annotations

from typing import Any

import click

from .common import app_option, echo_json, format_option, load_app

CANCELLED, NOT_CANCELLED = 0, 1
"""``emailevents cancel``'s exit statuses (2: a usage error, as for every command)."""


@click.command()
@click.argument("event_id")
@app_option
@format_option("json", help="A sentence, or one JSON document (docs/timing.md).")
def cancel(event_id: str, app_ref: str, fmt: str) -> None:
    """Cancel a scheduled emit (emit(..., send_at=)) so that it is never sent.

    Exits 0 when this command cancelled it, 1 when it did not: the relay has taken it for
    publishing already (its time came), it was cancelled before, it is not a scheduled emit,
    or no emit has that id.
    """
    from .. import store  # noqa: PLC0415

    events = load_app(app_ref)
    cancelled = events.cancel(event_id)
    with events.session_factory() as session:
        emit = store.explain(session, event_id).emit
    state = None if emit is None else str(emit.state)
    why = "cancelled: it will never be sent" if cancelled else _why_not(emit)
    if fmt == "json":
        echo_json({"event_id": event_id, "cancelled": cancelled, "state": state, "why": why})
    else:
        click.echo(f"{event_id}: {why}")
    if not cancelled:
        raise SystemExit(NOT_CANCELLED)


def _why_not(emit: Any) -> str:
    """Why an emit was not cancelled, from its row (``None``: no such row)."""
    if emit is None:
        return (
            "not cancelled: no emit with this id was scheduled through this database "
            "(only emits made with send_at= can be cancelled)"
        )
    if emit.state == "cancelled":
        return f"not cancelled: it was cancelled before, at {_utc(emit.cancelled_at)}"
    if emit.send_at is None:
        return f"not cancelled: it is not a scheduled emit (made without send_at=; {emit.state})"
    return (
        f"not cancelled: too late, its time came ({_utc(emit.send_at)}) and the relay took it "
        f"for publishing ({emit.state}); `emailevents explain {emit.event_id}` shows what happened"
    )


def _utc(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "-"

"""``emailevents preferences get | set``: a recipient's choices per category, for support staff
(docs/preferences.md)."""

from __future__ import annotations

import click

from ..errors import EmailEventsError
from .common import app_option, echo_json, format_option, load_app, table


@click.group()
def preferences() -> None:
    """A recipient's choices per category: what they get, and how that came to be."""


@preferences.command("get")
@click.argument("address")
@app_option
@format_option("json", help="A table, or one JSON document.")
def get(address: str, app_ref: str, fmt: str) -> None:
    """Every category for ADDRESS: on or off, and whether it chose, when and how."""
    events = load_app(app_ref)
    found = events.preferences.get(address)
    if fmt == "json":
        echo_json({"address": address, "preferences": [p.document() for p in found.values()]})
        return
    if not found:
        click.echo("the registry declares no categories: every event is sent to everyone")
        return
    rows = [
        (
            name,
            events.registry.categories[name].title,
            "on" if p.enabled else "off",
            p.how,
            "" if p.changed_at is None else p.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for name, p in found.items()
    ]
    click.echo(table(("Category", "Title", "Gets it", "How", "Changed (UTC)"), rows))


@preferences.command("set")
@click.argument("address")
@click.argument("category")
@click.argument("state", type=click.Choice(["on", "off"]))
@app_option
@click.option("--note", default="", help="Kept with the choice: who asked, and why.")
def set_preference(address: str, category: str, state: str, app_ref: str, note: str) -> None:
    """Switch CATEGORY on or off for ADDRESS (recorded as set by support staff)."""
    from ..preferences import How  # noqa: PLC0415

    events = load_app(app_ref)
    try:
        kept = events.preferences.set(
            address, category, enabled=state == "on", how=How.SUPPORT, detail=note
        )
    except EmailEventsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(kept.describe())

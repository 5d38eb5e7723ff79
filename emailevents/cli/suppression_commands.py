"""``emailevents suppressions list | add | remove | sync``: the suppression list we keep, and
Postmark's beside it (docs/webhooks.md#the-suppression-list)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from ..errors import EmailEventsError
from .common import app_option, echo_json, format_option, load_app, table

if TYPE_CHECKING:
    from ..suppressions import Changes, SuppressionList

F = Callable[..., Any]

stream_option = click.option(
    "--stream",
    default=None,
    help="One message stream (default: every stream the registry's events send on).",
)


@click.group()
def suppressions() -> None:
    """Each message stream's addresses not to send to: what bounced for good, complained, or
    was suppressed at Postmark or by hand. A run skips them (reason: suppressed)."""


def _suppression_list(app_ref: str) -> SuppressionList:
    return load_app(app_ref).suppressions


def _postmark_errors(command: F) -> F:
    """Postmark's refusals and outages as one line (no token is ever in them), exit 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EmailEventsError as exc:
            raise click.ClickException(str(exc)) from None

    return run


@suppressions.command("list")
@app_option
@click.option("--stream", default=None, help="One message stream (default: every stream).")
@format_option("json", help="A table, or one JSON document.")
def list_suppressions(app_ref: str, stream: str | None, fmt: str) -> None:
    """The addresses suppressed now, with why and since when (oldest first)."""
    found = _suppression_list(app_ref).list(stream)
    if fmt == "json":
        echo_json({"stream": stream, "suppressions": [s.document() for s in found]})
        return
    if not found:
        click.echo("no address is suppressed" + (f" on stream {stream!r}" if stream else ""))
        return
    rows = [
        (
            s.stream,
            s.address,
            s.reason,
            s.origin,
            s.since.strftime("%Y-%m-%d %H:%M:%S"),
            s.event_id or "",
            s.detail,
        )
        for s in found
    ]
    headers = ("Stream", "Address", "Reason", "Origin", "Since (UTC)", "Emit", "Detail")
    click.echo(table(headers, rows))


@suppressions.command("add")
@click.argument("addresses", nargs=-1, required=True)
@app_option
@stream_option
@click.option("--reason", default="", help="A note kept with it: who asked, and why.")
@format_option("json", help="A line per stream, or one JSON document.")
@_postmark_errors
def add(addresses: Sequence[str], app_ref: str, stream: str | None, reason: str, fmt: str) -> None:
    """Suppress ADDRESSES at Postmark, then here.

    At Postmark it is a ManualSuppression. Exits 1 when Postmark refused one (it is then not
    suppressed here either)."""
    results = _suppression_list(app_ref).add(addresses, stream=stream, reason=reason)
    _report(results, "suppressed", fmt)


@suppressions.command("remove")
@click.argument("addresses", nargs=-1, required=True)
@app_option
@stream_option
@format_option("json", help="A line per stream, or one JSON document.")
@_postmark_errors
def remove(addresses: Sequence[str], app_ref: str, stream: str | None, fmt: str) -> None:
    """Reactivate ADDRESSES at Postmark, then here.

    Postmark never reactivates a spam complaint: it is reported, kept here, and the command
    exits 1."""
    results = _suppression_list(app_ref).remove(addresses, stream=stream)
    _report(results, "reactivated", fmt)


@suppressions.command("sync")
@app_option
@stream_option
@format_option("json", help="A line per stream, or one JSON document.")
@_postmark_errors
def sync(app_ref: str, stream: str | None, fmt: str) -> None:
    """Take Postmark's suppressions into the list (its Suppressions API's dump)."""
    results = _suppression_list(app_ref).sync(stream)
    if fmt == "json":
        echo_json(
            {
                "streams": [
                    {
                        "stream": r.stream,
                        "added": list(r.added),
                        "known": list(r.known),
                        "only_here": list(r.only_here),
                    }
                    for r in results
                ]
            }
        )
        return
    for r in results:
        line = f"{r.stream}: {len(r.added)} added from Postmark, {len(r.known)} known already"
        click.echo(line + "".join(f"\n  added {address}" for address in r.added))
        for address in r.only_here:
            click.echo(
                f"  {address} is suppressed here but not at Postmark "
                f"(emailevents suppressions remove {address} --stream {r.stream} lifts it)"
            )


def _report(results: Sequence[Changes], done: str, fmt: str) -> None:
    if fmt == "json":
        echo_json(
            {
                "streams": [
                    {"stream": r.stream, done: list(r.changed), "refused": dict(r.refused)}
                    for r in results
                ]
            }
        )
    else:
        for r in results:
            click.echo(f"{r.stream}: {done} {', '.join(r.changed) or 'none'}")
            for address, why in r.refused.items():
                click.echo(f"{r.stream}: {address} refused: {why}", err=True)
    if any(r.refused for r in results):
        raise SystemExit(1)

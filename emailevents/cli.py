"""The ``emailevents`` command line. Nothing imports this module."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import EmailEventsError, RegistryError
from .outcomes import RunResult, Status
from .registry import Registry, load_registry

if TYPE_CHECKING:
    from .engine import EmailEvents

__all__ = ["main"]


def _importable_cwd() -> None:
    # Like `celery -A` and `flask`, the current directory is importable, so `module:attr`
    # references find the application's code.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))


def _registry(path: str) -> Registry:
    _importable_cwd()
    try:
        return load_registry(path)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="emailevents")
def main() -> None:
    """Transactional email as a declaration: events.yaml in, one Celery task per event out."""


@main.command("list")
@click.argument("registry", default="events.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    show_default=True,
    help="A plain aligned table, or a Markdown table for docs.",
)
def list_events(registry: str, fmt: str) -> None:
    """The table of events: task, toggle key, template, entities."""
    loaded = _registry(registry)
    header = ("Task", "Toggle Key", "Template", "Entities")
    rows = [
        (
            event.task_name,
            event.toggle or "(always enabled)",
            str(event.template),
            ", ".join(f"{name}: {etype.name}" for name, etype in event.entities),
        )
        for event in loaded.events.values()
    ]
    click.echo(_table(header, rows, markdown=fmt == "markdown"))


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("emailevents-demo"),
    show_default=True,
    help="Where the demo's database and messages go (emptied first).",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Keep the local Postmark running afterwards, to browse the messages; Ctrl-C stops it.",
)
@click.option("--port", default=0, help="The local Postmark's port (default: any free one).")
@click.option("-v", "--verbose", is_flag=True, help="Also print every outcome as it is logged.")
def demo(directory: Path, serve: bool, port: int, verbose: bool) -> None:
    """Run the 11 seed events through a real Celery worker and Postmark's protocol."""
    from .demo.run import REGISTRY, run_demo  # noqa: PLC0415 - only this command needs the demo

    _logging(verbose)
    try:
        with run_demo(directory, port=port) as report:
            sent = sum(len(r.with_status(Status.SENT)) for r in report.results)
            skipped = sum(1 for r in report.results if not r.with_status(Status.SENT))
            click.echo(
                f"emailevents demo: {len(report.results)} emits of the events in "
                f"{REGISTRY.name}, each a real Celery task on a worker (in-memory broker, "
                f"2 threads), sent with PostmarkSender to a local Postmark at "
                f"{report.postmark.url}\n"
            )
            click.echo(_table(("Event", "Outcome", "Sent", "To / why"), _demo_rows(report.results)))
            click.echo(
                f"\n{sent} messages sent in {len(report.postmark.requests)} Postmark API "
                f"requests, {skipped} emits skipped, in {report.seconds:.1f} s.\n"
                f"Rendered messages: {report.page} (open it in a browser)\n"
                f"As received by Postmark: {report.outbox}/ (one JSON file per message)\n"
                f"Why each email went out or not: table emailevents_deliveries in "
                f"{report.database}"
            )
            if serve:
                click.echo(f"\nBrowse them at {report.postmark.url} ; Ctrl-C stops.")
                _wait_for_interrupt()
    except EmailEventsError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("fake-postmark")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9025, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    default=("test-token",),
    show_default=True,
    help="A server API token it accepts (repeatable).",
)
@click.option(
    "--templates",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A directory of YAML templates, or one YAML file. Default: the demo's templates.",
)
def fake_postmark(host: str, port: int, tokens: tuple[str, ...], templates: Path | None) -> None:
    """Run the local Postmark-compatible server, for development and tests."""
    from .testing.fake_postmark import DEMO_TEMPLATES, FakePostmark  # noqa: PLC0415

    _logging(verbose=False)
    try:
        server = FakePostmark(host, port, tokens=tokens, templates=templates or DEMO_TEMPLATES)
    except EmailEventsError as exc:
        raise click.ClickException(str(exc)) from exc
    with server:
        count = len(server.templates)
        click.echo(
            f"A Postmark-compatible API at {server.url} ({count} templates, "
            f"{len(tokens)} token(s)); received messages at {server.url} ; Ctrl-C stops."
        )
        _wait_for_interrupt()


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped")


def _demo_rows(results: Iterable[RunResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for result in results:
        sent = result.with_status(Status.SENT)
        if sent:
            shown = ", ".join(o.recipient for o in sent[:2])
            more = f" (+{len(sent) - 2} more)" if len(sent) > 2 else ""  # noqa: PLR2004
            rows.append((result.event_key, "sent", str(len(sent)), shown + more))
        for outcome in result.outcomes:
            if outcome.status is not Status.SENT:
                why = f"{outcome.reason.value}: {outcome.detail}"
                rows.append((result.event_key, outcome.status.value, "0", why))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    if markdown:

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- commands that need the application's EmailEvents ---------------------------------------

APP_VARIABLE = "EMAILEVENTS_APP"

app_option = click.option(
    "--app",
    "-A",
    "app_ref",
    envvar=APP_VARIABLE,
    required=True,
    metavar="MODULE[:ATTR]",
    help=f"The application's EmailEvents instance, like `myapp.emails:events` (or set "
    f"{APP_VARIABLE}).",
)


def _load_app(ref: str) -> EmailEvents:
    """The EmailEvents instance at ``module:attr``, or the one instance in ``module``."""
    from .engine import EmailEvents  # noqa: PLC0415
    from .introspect import import_ref  # noqa: PLC0415

    _importable_cwd()
    try:
        found = import_ref(ref if ":" in ref else f"{ref}:__dict__")
    except LookupError as exc:
        raise click.UsageError(f"--app / {APP_VARIABLE}: {exc}") from exc
    if ":" not in ref:
        instances = [v for v in found.values() if isinstance(v, EmailEvents)]
        if len(instances) != 1:
            raise click.UsageError(
                f"--app / {APP_VARIABLE}: module '{ref}' holds {len(instances)} EmailEvents "
                "instances; name one as module:attribute"
            )
        found = instances[0]
    if not isinstance(found, EmailEvents):
        raise click.UsageError(
            f"--app / {APP_VARIABLE}: '{ref}' is a {type(found).__name__}, not an EmailEvents"
        )
    return found


@main.command()
@click.argument("event_id")
@app_option
def explain(event_id: str, app_ref: str) -> None:
    """Every recipient's outcome for one emit, and why."""
    from . import store  # noqa: PLC0415

    events = _load_app(app_ref)
    with events.session_factory() as session:
        explanation = store.explain(session, event_id)
    if explanation.emit is None and not explanation.deliveries:
        raise click.ClickException(
            f"nothing is recorded for event id {event_id}: it was never emitted through "
            "this database, or the worker has not run it yet"
        )
    if explanation.emit is not None:
        emit = explanation.emit
        state = emit.state
        if state == "pending":
            state += f" (not published yet; {emit.attempts} failed publish(es)"
            state += f", last: {emit.last_error})" if emit.last_error else ")"
        emitted = f"{emit.created_at:%Y-%m-%d %H:%M:%S}"
        click.echo(f"event {emit.event_key}, id {event_id}: emitted {emitted}; {state}")
    if not explanation.deliveries:
        click.echo("no outcome recorded yet: the worker has not run this emit")
        return
    key = explanation.deliveries[0].event_key
    if explanation.emit is None:
        click.echo(f"event {key}, id {event_id}")
    rows = [
        (
            d.recipient or "(the whole emit)",
            d.status,
            d.reason,
            d.message_id or d.detail or "",
            f"{d.updated_at:%Y-%m-%d %H:%M:%S}",
        )
        for d in explanation.deliveries
    ]
    click.echo(_table(("Recipient", "Status", "Reason", "Message ID / why", "At"), rows))


@main.command()
@app_option
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="The time window: a number and a unit, like 30m, 24h or 7d.",
)
@click.option("--event", "event_key", default=None, help="Only this event.")
def stats(app_ref: str, since: str, event_key: str | None) -> None:
    """Outcomes per event and reason over a time window."""
    from . import store  # noqa: PLC0415

    window = _duration(since)
    events = _load_app(app_ref)
    with events.session_factory() as session:
        counts = store.stats(session, since=datetime.now(UTC) - window, event_key=event_key)
    if not counts:
        click.echo(f"no outcomes recorded in the last {since}")
        return
    rows = [(c.event_key, c.status, c.reason, str(c.count)) for c in counts]
    click.echo(_table(("Event", "Status", "Reason", "Count"), rows))


@main.command("relay")
@app_option
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    help="Seconds a pending emit is left to the process that committed it.",
)
@click.option("--limit", default=500, show_default=True, help="Emits published per pass.")
def relay_command(app_ref: str, once: bool, interval: float, grace: float, limit: int) -> None:
    """Publish emits left behind by a broker outage or a crashed process."""
    events = _load_app(app_ref)
    _logging(verbose=False)
    while True:
        result = events.relay(limit=limit, grace=timedelta(seconds=grace))
        if result.published or result.failed or once:
            click.echo(f"published {result.published}, failed {result.failed}")
        if once:
            if result.failed:
                raise SystemExit(1)
            return
        if result.published < limit:
            time.sleep(interval)


def _duration(text: str) -> timedelta:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    try:
        return timedelta(**{units[unit]: float(number)})
    except (KeyError, ValueError):
        raise click.BadParameter(
            f"{text!r} is not a duration like 30m, 24h or 7d", param_hint="--since"
        ) from None

"""The ``emailevents`` command line. Nothing imports this module."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.shell_completion import CompletionItem

from .errors import ConfigurationError, EmailEventsError, RegistryError
from .outcomes import RunResult, Status

# Each command imports what it needs when it runs: `emailevents --help` imports neither Celery,
# SQLAlchemy nor pydantic (tests/test_cli.py holds it to that).
if TYPE_CHECKING:
    import sqlalchemy as sa

    from .engine import EmailEvents
    from .lint import LintReport
    from .preview import Preview, Rendered
    from .registry import Registry
    from .senders.postmark import PostmarkSender
    from .store import Explanation
    from .timeline import Life

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

NO_COLOR = "NO_COLOR"
"""Any non-empty value turns colour off (https://no-color.org); a pipe gets none either."""


def _importable_cwd() -> None:
    # Like `celery -A` and `flask`, the current directory is importable, so `module:attr`
    # references find the application's code.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))


def _registry(path: str) -> Registry:
    from .registry import load_registry  # noqa: PLC0415

    _importable_cwd()
    try:
        return load_registry(path)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(package_name="emailevents")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Transactional email as a declaration: events.yaml in, one Celery task per event out.

    \b
    Shell completion of commands, options and event names, for bash:
        eval "$(_EMAILEVENTS_COMPLETE=bash_source emailevents)"
    (zsh_source for zsh, fish_source for fish; docs/quickstart.md).
    """
    if os.environ.get(NO_COLOR):
        ctx.color = False  # the subcommands' contexts inherit it; click.echo then strips ANSI
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), color=ctx.color)


def _format_option(*formats: str, help: str) -> Callable[[F], F]:  # noqa: A002 - click's name
    """``--format``, the same on every command: text first and the default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", *formats]),
        default="text",
        show_default=True,
        help=help,
    )


def _timestamp(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; the engine writes UTC, and SQLite gives it back without a zone."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@main.command("list")
@click.argument("registry", default="events.yaml", type=click.Path(exists=True, dir_okay=False))
@_format_option(
    "markdown",
    "json",
    help="A plain aligned table, a Markdown table for docs, or one JSON document.",
)
def list_events(registry: str, fmt: str) -> None:
    """The table of events: task, toggle key, template, entities."""
    loaded = _registry(registry)
    if fmt == "json":
        document = {
            "registry": registry,
            "events": [
                {
                    "key": event.key,
                    "task": event.task_name,
                    "toggle": event.toggle,
                    "template": event.template,
                    "entities": {name: etype.name for name, etype in event.entities},
                }
                for event in loaded.events.values()
            ],
        }
        _echo_json(document)
        return
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
@click.argument("registry", default="events.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The module to write, e.g. myapp/emails.py.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when OUTPUT is out of date.")
def stubs(registry: str, output: Path, check: bool) -> None:
    """Write a typed emit() for the registry's events (one overload per event)."""
    from .stubs import render_stubs  # noqa: PLC0415

    text = render_stubs(_registry(registry), source=registry, target=output.as_posix())
    if not check:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: emit() typed for {registry}")
        return
    if not output.is_file() or output.read_text(encoding="utf-8") != text:
        click.echo(
            f"{output} does not match {registry}: run `emailevents stubs {registry} -o {output}`",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"{output} matches {registry}")


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("emailevents-demo"),  # run.DEFAULT_DIRECTORY, without importing the demo
    show_default=True,
    help="Where the demo's database and messages go: a new or empty folder, or one the demo made.",
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
    from .demo.seed import EXTRA_EMITS  # noqa: PLC0415

    _logging(verbose)
    try:
        with run_demo(directory, port=port) as report:
            sent = sum(len(r.with_status(Status.SENT)) for r in report.results)
            skipped = sum(1 for r in report.results if not r.with_status(Status.SENT))
            keys = {r.event_key for r in report.results}
            click.echo(
                f"emailevents demo: {len(report.results)} emits of the {len(keys)} events in "
                f"the demo's built-in registry ({_in_package(REGISTRY)}): one of each, and "
                f"{EXTRA_EMITS}. Each is a real Celery task on a worker (in-memory broker, "
                f"2 threads), sent with PostmarkSender to a local Postmark at "
                f"{report.postmark.url}\n"
            )
            click.echo(
                _table(
                    ("Event", "Outcome", "Sent", "To / why"),
                    _demo_rows(report.results),
                    colour_column=1,
                )
            )
            click.echo(
                f"\n{sent} messages sent in {len(report.postmark.requests)} Postmark API "
                f"requests, {skipped} emits skipped, in {report.seconds:.1f} s.\n"
                f"Rendered messages: {report.page} (open it in a browser)\n"
                f"As received by Postmark: {report.outbox}/ (one JSON file per message)\n"
                f"Why each email went out or not: table emailevents_deliveries in "
                f"{report.database}, or ask it:\n"
            )
            click.echo("\n".join(_demo_commands(directory, report.results)))
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
@click.option(
    "--webhook-url",
    default=None,
    help="Post Postmark's webhooks here (https://user:pass@host/path sends Basic credentials).",
)
def fake_postmark(
    host: str, port: int, tokens: tuple[str, ...], templates: Path | None, webhook_url: str | None
) -> None:
    """Run the local Postmark-compatible server, for development and tests."""
    from .demo import DEMO_TEMPLATES  # noqa: PLC0415
    from .testing.fake_postmark import FakePostmark  # noqa: PLC0415

    _logging(verbose=False)
    try:
        server = FakePostmark(
            host,
            port,
            tokens=tokens,
            templates=templates or DEMO_TEMPLATES,
            webhook_url=webhook_url,
        )
    except (EmailEventsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        server.start()
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another with --port"
        ) from None
    try:
        count = len(server.templates)
        click.echo(
            f"A Postmark-compatible API at {server.url} ({count} template"
            f"{'s' if count != 1 else ''}, {len(tokens)} token(s)); received messages at "
            f"{server.url} ; Ctrl-C stops."
        )
        _wait_for_interrupt()
    finally:
        server.stop()


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


def _in_package(path: Path) -> str:
    """``path`` from the folder that holds the package: the same wherever it is installed."""
    return path.relative_to(Path(__file__).parent.parent).as_posix()


def _demo_commands(directory: Path, results: Sequence[RunResult]) -> list[str]:
    """``explain`` (of a skipped emit) and ``stats`` on the demo's database, to copy and paste."""
    import shlex  # noqa: PLC0415

    from .demo.run import DIRECTORY_VARIABLE  # noqa: PLC0415

    skipped = [r for r in results if not r.with_status(Status.SENT)]
    example = (skipped or list(results))[-1].event_id
    prefix = f"{DIRECTORY_VARIABLE}={shlex.quote(str(directory))} emailevents"
    app = "--app emailevents.demo.app:events"
    return [f"  {prefix} explain {example} {app}", f"  {prefix} stats {app}"]


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


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markdown: bool = False,
    colour_column: int | None = None,
) -> str:
    """An aligned table; the cells of ``colour_column`` in the colour of their value."""
    if markdown:

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def cell(index: int, value: str, width: int, *, styled: bool) -> str:
        # Padded outside the escape codes, so that the columns line up on a terminal.
        shown = _coloured(value) if styled and index == colour_column else value
        return shown + " " * (width - len(value))

    lines = [
        "  ".join(
            cell(i, str(c), w, styled=r is not header)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# Outcome statuses and lint severities, as a terminal shows them. click.echo drops the colour
# when the output is not a terminal, and `main` when NO_COLOR is set.
_COLOURS = {
    "sent": "green",
    "skipped": "yellow",
    "failed": "red",
    "unknown": "magenta",
    "retry": "cyan",
    "claimed": "cyan",
    "error": "red",
    "warning": "yellow",
    "info": "cyan",
}


def _coloured(value: str) -> str:
    colour = _COLOURS.get(value)
    return click.style(value, fg=colour) if colour else value


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


def _complete_events(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of an event key: from the app's registry with --app (or the
    environment), else from --registry or ./events.yaml, read without importing anything."""
    keys: Iterable[str] = ()
    try:
        app_ref = ctx.params.get("app_ref") or os.environ.get(APP_VARIABLE)
        path = ctx.params.get("registry_path") or "events.yaml"
        if app_ref and not ctx.params.get("sample"):
            keys = _load_app(app_ref).registry.events
        elif Path(path).is_file():
            import yaml  # noqa: PLC0415

            declared = yaml.safe_load(Path(path).read_text(encoding="utf-8")).get("events")
            keys = [str(key) for key in declared] if isinstance(declared, dict) else ()
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than a traceback
        keys = ()
    return [CompletionItem(key) for key in keys if key.startswith(incomplete)]


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
@_format_option("json", help="A table, or one JSON document (docs/operations.md).")
def explain(event_id: str, app_ref: str, fmt: str) -> None:
    """Every recipient's outcome for one emit, and why; then each one's whole life: queued,
    sent, and what Postmark's webhooks said (delivered, bounced, opened, ...)."""
    from . import store, timeline  # noqa: PLC0415

    events = _load_app(app_ref)
    with events.session_factory() as session:
        explanation = store.explain(session, event_id)
        lives = timeline.explain(session, event_id)
    if explanation.emit is None and not explanation.deliveries:
        raise click.ClickException(
            f"nothing is recorded for event id {event_id}: it was never emitted through "
            "this database, or the worker has not run it yet"
        )
    if fmt == "json":
        _echo_json(_explanation_document(event_id, explanation, lives))
        return
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
    click.echo(
        _table(("Recipient", "Status", "Reason", "Message ID / why", "At"), rows, colour_column=1)
    )
    for life in lives.values():
        if life.recipient:
            click.echo(f"\n{life.recipient}: {life.state}")
            for step in life.steps:
                at = f"{step.at:%Y-%m-%d %H:%M:%S}" if step.at is not None else "-"
                click.echo(f"  {at}  {step.what}{_step_detail(step.what, step.detail)}")


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
    event_id: str, explanation: Explanation, lives: dict[str, Life]
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


@main.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, help="Requests answered at once.")
def serve(app_ref: str, host: str, port: int, threads: int) -> None:
    """Run the web component (Postmark's webhooks, docs/webhooks.md) on waitress."""
    from .web import WEBHOOK_PATH  # noqa: PLC0415
    from .web import serve as run_server  # noqa: PLC0415

    events = _load_app(app_ref)
    _logging(verbose=True)
    if events.webhook_auth is None:
        click.echo(
            f"warning: EmailEvents(webhook_auth=...) is not set: {WEBHOOK_PATH} answers 404",
            err=True,
        )
    click.echo(f"emailevents web on http://{host}:{port} ({WEBHOOK_PATH}); Ctrl-C stops.")
    try:
        run_server(events.wsgi_app(), host=host, port=port, threads=threads)
    except EmailEventsError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
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
    shell_complete=_complete_events,
    help="Only this event.",
)
@_format_option("json", help="A table, or one JSON document (docs/operations.md).")
def stats(app_ref: str, since: str, event_key: str | None, fmt: str) -> None:
    """Outcomes per event and reason over a time window."""
    from . import store  # noqa: PLC0415

    window = _duration(since)
    events = _load_app(app_ref)
    start = datetime.now(UTC) - window
    with events.session_factory() as session:
        counts = store.stats(session, since=start, event_key=event_key)
    if fmt == "json":
        _echo_json(
            {
                "since": since,
                "from": _timestamp(start),
                "event": event_key,
                "counts": [
                    {"event": c.event_key, "status": c.status, "reason": c.reason, "count": c.count}
                    for c in counts
                ],
            }
        )
        return
    if not counts:
        click.echo(f"no outcomes recorded in the last {since}")
        return
    rows = [(c.event_key, c.status, c.reason, str(c.count)) for c in counts]
    click.echo(_table(("Event", "Status", "Reason", "Count"), rows, colour_column=1))


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
            again = (
                f" ({result.redelivered} again: their task left no settled outcome)"
                if result.redelivered
                else ""
            )
            click.echo(f"published {result.published}{again}, failed {result.failed}")
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


# --- lint and preview ------------------------------------------------------------------------

FAIL_ON = ("error", "warning", "info")

optional_app_option = click.option(
    "--app",
    "-A",
    "app_ref",
    envvar=APP_VARIABLE,
    default=None,
    metavar="MODULE[:ATTR]",
    help=f"The application's EmailEvents instance (or set {APP_VARIABLE}).",
)
token_option = click.option(
    "--token",
    default=None,
    help="Postmark's Server API token (default: the POSTMARK_SERVER_TOKEN environment variable).",
)
api_url_option = click.option(
    "--api-url",
    default=None,
    help="Postmark's API URL (default: POSTMARK_API_URL, else Postmark's own).",
)


class _ConfigurationProblem(click.ClickException):
    """A setting is wrong or missing: exit status 2, like a usage error."""

    exit_code = 2


def _postmark_sender(
    token: str | None, api_url: str | None, app: EmailEvents | None
) -> PostmarkSender | None:
    """The sender to reach Postmark with: the options' (or the environment's), else the app's.

    With no token anywhere, None: the checks against Postmark are skipped.
    """
    from .senders.postmark import TOKEN_VARIABLE, PostmarkSender  # noqa: PLC0415

    if token or api_url or os.environ.get(TOKEN_VARIABLE, "").strip():
        try:
            sender = PostmarkSender(token, api_url=api_url)
            sender.check()
        except ConfigurationError as exc:
            raise _ConfigurationProblem(str(exc)) from None
        return sender
    if app is not None and isinstance(app.sender, PostmarkSender):
        try:
            app.sender.check()
        except ConfigurationError:
            # The environment has no token (checked above): the app's sender was given none.
            return None
        return app.sender
    return None


def _secret(token: str | None) -> str:
    from .senders.postmark import TOKEN_VARIABLE  # noqa: PLC0415

    return (token or os.environ.get(TOKEN_VARIABLE, "")).strip()


def _scrub(text: str, secret: str) -> str:
    # Nothing lint prints comes from the token, but what a server answered might repeat it.
    return text.replace(secret, "<hidden>") if secret else text


def _app_for_lint(app_ref: str | None) -> tuple[EmailEvents | None, str]:
    """The application, or None with the reason when its own registry keeps it from loading."""
    if app_ref is None:
        return None, ""
    try:
        return _load_app(app_ref), ""
    except click.UsageError as exc:
        cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
        if isinstance(cause, RegistryError):
            return None, "the application's registry does not load: linted without the app"
        raise


def _app_context(app: EmailEvents) -> dict[str, Any]:
    """The context values the application gave EmailEvents (those its events use)."""
    from .introspect import Callee  # noqa: PLC0415

    context: dict[str, Any] = {}
    for values in app.runtime.context.values():
        for name, value in values.items():
            context[name] = value.func if isinstance(value, Callee) else value
    return context


def _org_settings(app: EmailEvents) -> tuple[dict[str, int] | None, str]:
    """The engine's org settings, by toggle key; None (and why) when they cannot be read."""
    import sqlalchemy as sa  # noqa: PLC0415

    from .lint import org_settings_toggles  # noqa: PLC0415

    if app.registry.toggles is not None:
        return None, ""  # the application keeps its toggles itself: they cannot be listed
    try:
        with app.session_factory() as session:
            return org_settings_toggles(session), ""
    except sa.exc.SQLAlchemyError as exc:
        return None, f"the org settings could not be read: {str(exc).splitlines()[0]}"


@main.command("lint")
@click.argument("registry", required=False, type=click.Path(dir_okay=False))
@optional_app_option
@token_option
@api_url_option
@click.option("--offline", is_flag=True, help="Skip the checks against Postmark.")
@click.option(
    "--no-import",
    "no_import",
    is_flag=True,
    help="Import nothing the registry names, so that none of its code runs; skip the checks "
    "that need it.",
)
@_format_option("json", help="One finding per line, or one JSON document.")
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON),
    default="error",
    show_default=True,
    help="The lowest severity that makes the exit status 1.",
)
def lint_command(  # noqa: PLR0917 - one parameter per option
    registry: str | None,
    app_ref: str | None,
    token: str | None,
    api_url: str | None,
    offline: bool,
    no_import: bool,
    fmt: str,
    fail_on: str,
) -> None:
    """Check the registry offline and, given a Postmark token, its templates at Postmark.

    Exit status: 0 clean, 1 findings at or above --fail-on, 2 usage or configuration problems.
    Finding codes are explained in docs/lint.md.
    """
    from .lint import PostmarkAPIError, Severity, lint_report  # noqa: PLC0415

    notes: list[str] = []
    if no_import:
        app_ref, notes = _without_app(app_ref)
    else:
        _importable_cwd()
    app, note = _app_for_lint(app_ref)
    notes += [note] if note else []
    path = registry or (app.registry.source if app is not None else "events.yaml")
    if not Path(path).is_file():
        raise click.UsageError(f"no registry file at {path}: give its path, or --app")
    sender = None if offline else _postmark_sender(token, api_url, app)
    context = _app_context(app) if app is not None else None
    toggle_keys, note = _org_settings(app) if app is not None else (None, "")
    notes += [note] if note else []
    secret = _secret(token)
    try:
        report = lint_report(
            path,
            context_names=context,
            toggle_keys=toggle_keys,
            sender=sender,
            resolve=not no_import,
        )
    except (ConfigurationError, PostmarkAPIError) as exc:
        raise _ConfigurationProblem(_scrub(str(exc), secret)) from None
    if fmt == "json":
        document = {
            "registry": path,
            "events": report.events,
            "findings": [f.to_dict() for f in report.findings],
            "counts": report.counts(),
            "shared_toggles": {k: list(v) for k, v in report.shared_toggles.items()},
            "postmark": report.postmark,
            "templates_checked": report.templates_checked,
            "skipped": list(report.skipped),
            "notes": notes,
        }
        click.echo(_scrub(json.dumps(document, indent=2), secret))
    else:
        for finding in report.findings:
            # The code in its severity's colour: red errors, yellow warnings, cyan infos.
            code = click.style(finding.code, fg=_COLOURS[finding.severity.value])
            line = _scrub(str(finding), secret)
            click.echo(line.replace(f": {finding.code} ", f": {code} ", 1))
        for line in [*notes, *_lint_summary(path, report)]:
            click.echo(_scrub(line, secret), err=True)
    threshold = Severity(fail_on).rank
    if any(f.severity.rank >= threshold for f in report.findings):
        raise SystemExit(1)


def _without_app(app_ref: str | None) -> tuple[None, list[str]]:
    """``lint --no-import`` takes no application: importing it would run the application."""
    if app_ref is None:
        return None, []
    source = click.get_current_context().get_parameter_source("app_ref")
    if source is not click.core.ParameterSource.ENVIRONMENT:
        raise click.UsageError(
            "--no-import imports nothing, and --app imports the application: give one of them"
        )
    return None, [f"{APP_VARIABLE} is not used with --no-import: the application is not imported"]


def _lint_summary(path: str, report: LintReport) -> list[str]:
    counts = report.counts()
    found = [f"{n} {kind}{'s' if n != 1 and kind != 'info' else ''}" for kind, n in counts.items()]
    events = f"{report.events} event{'s' if report.events != 1 else ''}"
    lines = [
        f"{', '.join(found)} in {path} ({events})"
        if report.findings
        else f"no findings in {path} ({events})"
    ]
    if report.postmark is not None:
        lines.append(
            f"templates checked at Postmark ({report.postmark}): {report.templates_checked}"
        )
    else:
        lines.append(
            "templates not checked at Postmark: give --token, or set POSTMARK_SERVER_TOKEN"
        )
    if report.skipped:
        lines.append(f"not checked, to import nothing (--no-import): {'; '.join(report.skipped)}")
    lines += [
        f"toggle '{key}' switches {len(keys)} events: {', '.join(keys)}"
        for key, keys in report.shared_toggles.items()
    ]
    return lines


@main.command("preview")
@click.argument("event_key", metavar="EVENT", shell_complete=_complete_events)
@click.option(
    "--cuid",
    "cuids",
    multiple=True,
    metavar="NAME=CUID",
    help="An entity of the event and its CUID, like org=c123 (one per entity).",
)
@optional_app_option
@click.option(
    "--sample",
    is_flag=True,
    help="Sample values from the column types instead of the database (no --app needed).",
)
@click.option(
    "--registry",
    "registry_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --sample: the registry (default: the app's, else events.yaml).",
)
@token_option
@api_url_option
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the rendered HTML body to this file instead of printing it.",
)
@_format_option("json", help="Readable sections, or one JSON document.")
def preview_command(  # noqa: PLR0917 - one parameter per option
    event_key: str,
    cuids: tuple[str, ...],
    app_ref: str | None,
    sample: bool,
    registry_path: str | None,
    token: str | None,
    api_url: str | None,
    html_file: Path | None,
    fmt: str,
) -> None:
    """Build EVENT's TemplateModel as its task would, and render it where Postmark is reachable.

    With --app, the entities are loaded from the application's database by their CUIDs; with
    --sample, values are samples of their columns' types, no database needed.
    """
    _importable_cwd()
    if not sample and app_ref is None:
        raise click.UsageError(
            f"preview needs the application (--app or {APP_VARIABLE}) to load the entities, "
            "or --sample for sample values"
        )
    if sample and cuids:
        raise click.UsageError("--sample makes up the values: leave out --cuid")
    if registry_path and not sample:
        raise click.UsageError("--registry is for --sample; with --app, the app's registry is used")
    app = _load_app(app_ref) if app_ref is not None else None
    shown = _build_preview(app, event_key, cuids, sample=sample, registry_path=registry_path)
    secret = _secret(token)
    rendered, not_rendered = _render(_postmark_sender(token, api_url, app), shown, secret)
    if rendered is not None and rendered.html is not None and html_file is not None:
        html_file.write_text(rendered.html, encoding="utf-8")
    if fmt == "json":
        document = shown.to_dict()
        document["rendered"] = rendered.to_dict() if rendered is not None else None
        if rendered is None:
            document["not_rendered"] = not_rendered
        click.echo(_scrub(json.dumps(document, indent=2), secret))
        return
    click.echo(_scrub(_preview_text(shown, rendered, not_rendered, html_file), secret))


def _build_preview(
    app: EmailEvents | None,
    event_key: str,
    cuids: Sequence[str],
    *,
    sample: bool,
    registry_path: str | None,
) -> Preview:
    """The preview from the app's database, or with ``sample`` values."""
    from . import preview as previews  # noqa: PLC0415
    from .errors import EmitError  # noqa: PLC0415

    try:
        if sample or app is None:
            source = registry_path or (app.registry.source if app else "events.yaml")
            return previews.preview_sample(_registry(source), event_key)
        return previews.preview(app, event_key, _named_cuids(cuids))
    except EmitError as exc:
        raise click.UsageError(str(exc)) from None
    except previews.PreviewError as exc:
        raise click.ClickException(str(exc)) from None


def _render(
    sender: PostmarkSender | None, shown: Preview, secret: str
) -> tuple[Rendered | None, str]:
    """Postmark's rendering of the preview, or None and why not."""
    from . import preview as previews  # noqa: PLC0415
    from .lint import PostmarkUnreachableError  # noqa: PLC0415

    if sender is None:
        return None, "no Postmark server configured (give --token and --api-url)"
    try:
        return previews.render(sender, shown.template, shown.template_model), ""
    except PostmarkUnreachableError as exc:
        return None, _scrub(str(exc), secret)
    except previews.PreviewError as exc:
        raise click.ClickException(_scrub(str(exc), secret)) from None
    except ConfigurationError as exc:
        raise _ConfigurationProblem(_scrub(str(exc), secret)) from None


def _named_cuids(pairs: Sequence[str]) -> dict[str, str]:
    cuids: dict[str, str] = {}
    for pair in pairs:
        name, sep, cuid = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=CUID", param_hint="--cuid")
        if name.strip() in cuids:
            raise click.BadParameter(f"'{name.strip()}' is given twice", param_hint="--cuid")
        cuids[name.strip()] = cuid.strip()
    return cuids


def _preview_text(
    shown: Preview, rendered: Rendered | None, not_rendered: str, html_file: Path | None
) -> str:
    values = "sample values" if shown.sample else "loaded from the database"
    lines = [
        f"event {shown.event_key}, template {shown.template!r} ({values})",
        f"to: {', '.join(shown.recipients) or '(nobody)'}",
        *(f"note: {note}" for note in shown.notes),
        "TemplateModel:",
        json.dumps(dict(shown.template_model), indent=2, ensure_ascii=False),
    ]
    if rendered is None:
        lines.append(f"not rendered: {not_rendered}")
        return "\n".join(lines)
    lines += [f"note: {note}" for note in rendered.notes]
    lines.append(f"Subject: {rendered.subject}")
    if rendered.text is not None:
        lines += ["TextBody:", rendered.text.rstrip("\n")]
    if rendered.html is not None:
        if html_file is not None:
            lines.append(f"HtmlBody: written to {html_file} ({len(rendered.html)} characters)")
        else:
            lines += ["HtmlBody:", rendered.html.rstrip("\n")]
    return "\n".join(lines)


@main.group()
def db() -> None:
    """emailevents' own tables: upgrade them, check them, show their revision."""


def _db_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--url",
        default=None,
        metavar="URL",
        help="The database, as an SQLAlchemy URL (instead of --app).",
    )(command)
    command = _format_option("json", help="Text, or one JSON document.")(command)
    return optional_app_option(command)


@contextlib.contextmanager
def _database(url: str | None, app_ref: str | None) -> Iterator[sa.Engine]:
    """The engine --url names (disposed after), or the one the application's session factory
    binds. A database that cannot be reached is one line naming it, never its password."""
    import sqlalchemy as sa  # noqa: PLC0415

    if (url is None) == (app_ref is None):
        raise click.UsageError(f"give --url or --app (or set {APP_VARIABLE}), one of them")
    if url is None:
        with _load_app(str(app_ref)).session_factory() as session:
            engine = session.get_bind().engine
    else:
        engine = sa.create_engine(url)
    try:
        yield engine
    except sa.exc.OperationalError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise click.ClickException(
            f"{_shown(engine)}: the database cannot be reached: {first}"
        ) from exc
    finally:
        if url is not None:
            engine.dispose()


def _shown(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@db.command("upgrade")
@_db_options
@click.option("--revision", default="head", show_default=True, help="The revision to reach.")
def db_upgrade(url: str | None, app_ref: str | None, fmt: str, revision: str) -> None:
    """Bring emailevents' tables to this version (data kept)."""
    from . import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        before, after = schema.upgrade(engine, revision)
    if fmt == "json":
        _echo_json({"database": _shown(engine), "before": before, "after": after})
        return
    moved = "already at" if before == after else f"upgraded from {before or 'nothing'} to"
    click.echo(f"{_shown(engine)}: {moved} revision {after}")


@db.command("check")
@_db_options
def db_check(url: str | None, app_ref: str | None, fmt: str) -> None:
    """Exit 1, naming each difference, when emailevents' tables differ from this version's."""
    from . import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        found = schema.differences(engine)
        at = schema.current(engine)
    if fmt == "json":
        document = {"database": _shown(engine), "revision": at, "head": schema.head()}
        _echo_json({**document, "differences": found})
    elif found:
        for line in found:
            click.echo(line)
        click.echo(
            f"run: emailevents db upgrade (the database is at {at or 'no revision'}, "
            f"this version at {schema.head()})"
        )
    else:
        click.echo(f"{_shown(engine)}: emailevents' tables match this version ({schema.head()})")
    if found:
        raise SystemExit(1)


@db.command("current")
@_db_options
def db_current(url: str | None, app_ref: str | None, fmt: str) -> None:
    """The revision emailevents' tables are at, and the newest this version ships."""
    from . import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        revision = schema.current(engine)
    if fmt == "json":
        _echo_json({"database": _shown(engine), "revision": revision, "head": schema.head()})
        return
    at = revision or "none (never upgraded)"
    click.echo(f"{_shown(engine)}: at {at}; this version's newest is {schema.head()}")

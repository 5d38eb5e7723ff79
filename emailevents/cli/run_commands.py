"""The commands that keep running: ``demo``, ``fake-postmark``, ``serve`` and ``relay``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import click

from ..errors import EmailEventsError
from ..outcomes import RunResult, Status
from .common import app_option, load_app, table


@click.command()
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
    from ..demo.run import REGISTRY, run_demo  # noqa: PLC0415 - only this command needs the demo
    from ..demo.seed import EXTRA_EMITS  # noqa: PLC0415

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
                table(
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


@click.command("fake-postmark")
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
    from ..demo import DEMO_TEMPLATES  # noqa: PLC0415
    from ..testing.fake_postmark import FakePostmark  # noqa: PLC0415

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
    return path.relative_to(Path(__file__).parents[2]).as_posix()


def _demo_commands(directory: Path, results: Sequence[RunResult]) -> list[str]:
    """``explain`` (of a skipped emit) and ``stats`` on the demo's database, to copy and paste."""
    import shlex  # noqa: PLC0415

    from ..demo.run import DIRECTORY_VARIABLE  # noqa: PLC0415

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


@click.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, help="Requests answered at once.")
def serve(app_ref: str, host: str, port: int, threads: int) -> None:
    """Run the web component (Postmark's webhooks, docs/webhooks.md) on waitress."""
    from ..web import WEBHOOK_PATH  # noqa: PLC0415
    from ..web import serve as run_server  # noqa: PLC0415

    events = load_app(app_ref)
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


@click.command("relay")
@app_option
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    help="Seconds between passes: a scheduled emit is published at most this late, plus a pass.",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    help="Seconds a pending emit is left to the process that committed it.",
)
@click.option("--limit", default=500, show_default=True, help="Emits published per pass.")
def relay_command(app_ref: str, once: bool, interval: float, grace: float, limit: int) -> None:
    """Publish scheduled emits when due, and emits left behind by a broker outage or a crashed
    process; close the digests due and publish them to be sent."""
    events = load_app(app_ref)
    _logging(verbose=False)
    while True:
        result = events.relay(limit=limit, grace=timedelta(seconds=grace))
        if result.digests:
            click.echo(f"digests: {result.digests} closed digest(s) published to send")
        if result.published or result.failed or once:
            again = (
                f" ({result.redelivered} again: their task left no settled outcome)"
                if result.redelivered
                else ""
            )
            due = f" ({result.scheduled} scheduled, now due)" if result.scheduled else ""
            click.echo(f"published {result.published}{due}{again}, failed {result.failed}")
        if once:
            if result.failed:
                raise SystemExit(1)
            return
        if result.published < limit:
            time.sleep(interval)

"""The ``emailevents`` command line. Nothing imports this module."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import click

from .errors import EmailEventsError, RegistryError
from .outcomes import RunResult, Status
from .registry import Registry, load_registry

__all__ = ["main"]


def _registry(path: str) -> Registry:
    # Like `celery -A` and `flask`, the current directory is importable, so the registry's
    # `module:attr` references find the application's models.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
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
            event.task_name.rpartition(".")[2] if event.spec.task else event.task_name,
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
@click.option("-v", "--verbose", is_flag=True, help="Also print every outcome as it is logged.")
def demo(directory: Path, verbose: bool) -> None:
    """Run the 11 seed events through a real Celery worker, on embedded defaults."""
    from .demo.run import REGISTRY, run_demo  # noqa: PLC0415 - only this command needs the demo

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not verbose:
        # The in-memory transport warns that it has no host name; nothing to act on here.
        logging.getLogger("kombu").setLevel(logging.ERROR)
    try:
        report = run_demo(directory)
    except EmailEventsError as exc:
        raise click.ClickException(str(exc)) from exc
    sent = sum(len(r.with_status(Status.SENT)) for r in report.results)
    skipped = sum(1 for r in report.results if not r.with_status(Status.SENT))
    click.echo(
        f"emailevents demo: {len(report.results)} emits of the events in {REGISTRY.name}, "
        "each a real Celery task run by a worker (in-memory broker, 2 threads)\n"
    )
    click.echo(_table(("Event", "Outcome", "Sent", "To / why"), _demo_rows(report.results)))
    click.echo(
        f"\n{sent} messages sent, {skipped} emits skipped, in {report.seconds:.1f} s.\n"
        f"Messages: {report.outbox}/ (one JSON file per message, as sent to Postmark)\n"
        f"Database: {report.database} (why each email went out or not: "
        "table emailevents_deliveries)"
    )


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

"""What the commands share: ``--format``, ``--app``, the application loaded from it, event
completion, and the tables and JSON they print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from ..engine import EmailEvents

F = TypeVar("F", bound=Callable[..., Any])


def importable_cwd() -> None:
    # Like `celery -A` and `flask`, the current directory is importable, so `module:attr`
    # references find the application's code.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))


def format_option(*formats: str, help: str) -> Callable[[F], F]:  # noqa: A002 - click's name
    """``--format``, the same on every command: text first and the default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", *formats]),
        default="text",
        show_default=True,
        help=help,
    )


def echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def table(
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
        shown = coloured(value) if styled and index == colour_column else value
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
COLOURS = {
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


def coloured(value: str) -> str:
    colour = COLOURS.get(value)
    return click.style(value, fg=colour) if colour else value


# The application's EmailEvents, for the commands that work on its database or registry.

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
optional_app_option = click.option(
    "--app",
    "-A",
    "app_ref",
    envvar=APP_VARIABLE,
    default=None,
    metavar="MODULE[:ATTR]",
    help=f"The application's EmailEvents instance (or set {APP_VARIABLE}).",
)


def complete_events(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of an event key: from the app's registry with --app (or the
    environment), else from --registry or ./events.yaml, read without importing anything."""
    keys: Iterable[str] = ()
    try:
        app_ref = ctx.params.get("app_ref") or os.environ.get(APP_VARIABLE)
        path = ctx.params.get("registry_path") or "events.yaml"
        if app_ref and not ctx.params.get("sample"):
            keys = load_app(app_ref).registry.events
        elif Path(path).is_file():
            import yaml  # noqa: PLC0415

            declared = yaml.safe_load(Path(path).read_text(encoding="utf-8")).get("events")
            keys = [str(key) for key in declared] if isinstance(declared, dict) else ()
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than a traceback
        keys = ()
    return [CompletionItem(key) for key in keys if key.startswith(incomplete)]


def load_app(ref: str) -> EmailEvents:
    """The EmailEvents instance at ``module:attr``, or the one instance in ``module``."""
    from ..engine import EmailEvents  # noqa: PLC0415
    from ..introspect import import_ref  # noqa: PLC0415

    importable_cwd()
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

"""The ``emailevents`` command line. Nothing imports this package.

One module per kind of command: ``registry_commands`` (list, stubs, lint, preview),
``run_commands`` (demo, fake-postmark, serve, relay), ``inspect_commands`` (explain, stats) and
``db_commands`` (the db group), ``schedule_commands`` (cancel), ``suppression_commands`` and
``preference_commands`` (the suppressions and preferences groups); ``common`` holds what they
share.
"""

from __future__ import annotations

import os

import click

from .db_commands import db
from .inspect_commands import explain, stats
from .preference_commands import preferences
from .registry_commands import lint_command, list_events, preview_command, stubs
from .run_commands import demo, fake_postmark, relay_command, serve
from .schedule_commands import cancel
from .suppression_commands import suppressions

# Each command imports what it needs when it runs: `emailevents --help` imports neither Celery,
# SQLAlchemy nor pydantic (tests/test_cli.py holds it to that).

__all__ = ["main"]

NO_COLOR = "NO_COLOR"
"""Any non-empty value turns colour off (https://no-color.org); a pipe gets none either."""


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


for command in (
    list_events,
    stubs,
    demo,
    fake_postmark,
    explain,
    serve,
    stats,
    relay_command,
    cancel,
    lint_command,
    preview_command,
    db,
    suppressions,
    preferences,
):
    main.add_command(command)

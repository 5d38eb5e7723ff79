"""``emailevents db``: emailevents' own tables, upgraded, checked and their revision shown."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from .common import APP_VARIABLE, echo_json, format_option, load_app, optional_app_option

if TYPE_CHECKING:
    import sqlalchemy as sa


@click.group()
def db() -> None:
    """emailevents' own tables: upgrade them, check them, show their revision."""


def _db_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--url",
        default=None,
        metavar="URL",
        help="The database, as an SQLAlchemy URL (instead of --app).",
    )(command)
    command = format_option("json", help="Text, or one JSON document.")(command)
    return optional_app_option(command)


@contextlib.contextmanager
def _database(url: str | None, app_ref: str | None) -> Iterator[sa.Engine]:
    """The engine --url names (disposed after), or the one the application's session factory
    binds. A database that cannot be reached is one line naming it, never its password."""
    import sqlalchemy as sa  # noqa: PLC0415

    if (url is None) == (app_ref is None):
        raise click.UsageError(f"give --url or --app (or set {APP_VARIABLE}), one of them")
    if url is None:
        with load_app(str(app_ref)).session_factory() as session:
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
    from .. import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        before, after = schema.upgrade(engine, revision)
    if fmt == "json":
        echo_json({"database": _shown(engine), "before": before, "after": after})
        return
    moved = "already at" if before == after else f"upgraded from {before or 'nothing'} to"
    click.echo(f"{_shown(engine)}: {moved} revision {after}")


@db.command("check")
@_db_options
def db_check(url: str | None, app_ref: str | None, fmt: str) -> None:
    """Exit 1, naming each difference, when emailevents' tables differ from this version's."""
    from .. import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        found = schema.differences(engine)
        at = schema.current(engine)
    if fmt == "json":
        document = {"database": _shown(engine), "revision": at, "head": schema.head()}
        echo_json({**document, "differences": found})
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
    from .. import schema  # noqa: PLC0415

    with _database(url, app_ref) as engine:
        revision = schema.current(engine)
    if fmt == "json":
        echo_json({"database": _shown(engine), "revision": revision, "head": schema.head()})
        return
    at = revision or "none (never upgraded)"
    click.echo(f"{_shown(engine)}: at {at}; this version's newest is {schema.head()}")

"""emailevents' tables over time: the Alembic migrations shipped in the package
(``emailevents db upgrade | check | current``), and the check that refuses to work on tables
older than this version.

Our migrations keep their own version table (``emailevents_alembic_version``), so they never
meet the application's. An application that prefers one Alembic environment adds
``emailevents:migrations/versions`` to its ``version_locations`` (docs/migrations.md).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import ConfigurationError
from .tables import emits, metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "VERSION_TABLE",
    "current",
    "differences",
    "head",
    "missing",
    "ours",
    "upgrade",
    "verify",
]

VERSION_TABLE = "emailevents_alembic_version"
SCRIPT_LOCATION = "emailevents:migrations"
UPGRADE = "emailevents db upgrade"
FIRST, CHECK_AFTER = "0001", "0002"
# What create_tables() made before migrations shipped: the tables of a database with no version.
UNVERSIONED_TABLES = frozenset(
    {"emailevents_org_settings", "emailevents_deliveries", "emailevents_emits"}
)


def ours(name: str | None, type_: str, _parents: object = None) -> bool:
    """Alembic's ``include_name``: emailevents' tables, never the application's."""
    return type_ != "table" or name in metadata.tables


def head() -> str:
    """The newest revision this version of emailevents ships."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only `db` commands need Alembic

    revision = ScriptDirectory.from_config(_config(None)).get_current_head()
    assert revision is not None  # noqa: S101 - the package ships its migrations
    return revision


def current(engine: sa.Engine) -> str | None:
    """The revision the database's tables are at; ``None`` when it holds no version yet."""
    with engine.connect() as connection:
        return _revision(connection)


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring emailevents' tables to ``revision``, data kept; return (before, after).

    A database made by ``create_tables()`` before migrations shipped holds no version: it is
    first stamped with the revision its columns match, then upgraded from there.
    """
    from alembic import command  # noqa: PLC0415 - only `db` commands need Alembic

    with engine.begin() as connection:
        before = _revision(connection)
        config = _config(connection)
        if before is None and (adopted := _unversioned(connection)) is not None:
            command.stamp(config, adopted)
        command.upgrade(config, revision)
        after = _revision(connection)
    _verified.discard(engine)
    return before, after


def differences(engine: sa.Engine) -> list[str]:
    """What the database's emailevents tables lack or hold beyond this version's schema, one
    line each (Alembic's comparison of the database with ``emailevents.metadata``)."""
    from alembic.autogenerate import compare_metadata  # noqa: PLC0415
    from alembic.migration import MigrationContext  # noqa: PLC0415

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": ours, "compare_type": True}
        )
        found = list(_flat(compare_metadata(context, metadata)))
    absent = {diff[1].name for diff in found if diff[0] == "add_table"}
    # A missing table's indexes go without saying.
    return [
        _describe(diff)
        for diff in found
        if not (diff[0] == "add_index" and diff[1].table.name in absent)
    ]


def missing(connection: sa.Connection) -> list[str]:
    """The tables and columns this version writes that the database lacks (one reflection
    query per table: cheap enough to run once per process)."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    problems = []
    for table in metadata.tables.values():
        if table.name not in tables:
            problems.append(f"table {table.name} is missing")
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        problems += [
            f"{table.name}: column {column.name} is missing"
            for column in table.columns
            if column.name not in present
        ]
    return problems


_verified: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_verifying = threading.Lock()


def verify(connection: sa.Connection) -> None:
    """Raise :class:`ConfigurationError` naming ``emailevents db upgrade`` when the database
    lacks a table or column this version writes. Checked once per engine and process."""
    engine = connection.engine
    if engine in _verified:
        return
    with _verifying:
        if engine in _verified:
            return
        problems = missing(connection)
        if problems:
            raise ConfigurationError(
                f"emailevents' tables are older than this version of emailevents: "
                f"{'; '.join(problems)}. Run `{UPGRADE} --app MODULE:ATTRIBUTE` (or --url URL) "
                "before starting workers or emitting (docs/migrations.md)"
            )
        _verified.add(engine)


def _config(connection: sa.Connection | None) -> Config:
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def _revision(connection: sa.Connection) -> str | None:
    from alembic.migration import MigrationContext  # noqa: PLC0415

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _unversioned(connection: sa.Connection) -> str | None:
    """The revision a database whose tables ``create_tables()`` made without migrations is at,
    read off its columns; ``None`` for a database without our tables (upgrade makes them)."""
    tables = set(sa.inspect(connection).get_table_names()) & set(metadata.tables)
    if not tables:
        return None
    if tables != UNVERSIONED_TABLES:
        raise ConfigurationError(
            f"the database holds only some of emailevents' tables ({', '.join(sorted(tables))}) "
            f"and no version: made by hand? Create the others or drop these, then run `{UPGRADE}`"
        )
    columns = {column["name"] for column in sa.inspect(connection).get_columns(emits.name)}
    return CHECK_AFTER if "check_after" in columns else FIRST


def _flat(diffs: Iterable[Any]) -> Iterable[tuple[Any, ...]]:
    """Alembic groups a column's modifications in a list; the rest are tuples."""
    for diff in diffs:
        if isinstance(diff, list):
            yield from diff
        else:
            yield diff


def _describe(diff: tuple[Any, ...]) -> str:
    kind, *rest = diff
    action, _, what = kind.partition("_")
    if what in {"table", "index", "constraint", "fk"}:
        (item,) = rest
        table = item if what == "table" else item.table
        name = f"{what} {item.name}" if what != "table" else "table"
        return f"{table.name}: {name} {_PRESENCE[action]}"
    if what == "column":
        _, table, column = rest
        return f"{table}: column {column.name} {_PRESENCE[action]}"
    _, table, column, _, existing, wanted = rest
    return f"{table}.{column}: {what} is {existing!r} where this version has {wanted!r}"


_PRESENCE = {"add": "is missing", "remove": "is not in this version's schema"}

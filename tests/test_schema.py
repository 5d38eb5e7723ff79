"""emailevents' tables over time: shipped migrations, ``emailevents db``, and the refusal to work
on tables older than the code (docs/migrations.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from emailevents import schema
from emailevents.cli import main
from emailevents.errors import ConfigurationError
from emailevents.store import metadata
from tests.appmodule import app_module, demo_app

# The tables as emailevents 0.1 made them (`create_tables()`, no migrations): what databases in
# the field hold, frozen here as the release shipped it.
FIRST_RELEASE = sa.MetaData()
sa.Table(
    "emailevents_org_settings",
    FIRST_RELEASE,
    sa.Column("org_key", sa.String(255), primary_key=True),
    sa.Column("toggle_key", sa.String(255), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "emailevents_deliveries",
    FIRST_RELEASE,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(64)),
    sa.Column("claim", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("event_id", "recipient", name="uq_emailevents_delivery"),
    sa.Index("ix_emailevents_deliveries_key_created", "event_key", "created_at"),
)
sa.Table(
    "emailevents_emits",
    FIRST_RELEASE,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("task_name", sa.String(255), nullable=False),
    sa.Column("cuids", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("lease", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Index("ix_emailevents_emits_state_created", "state", "created_at"),
)

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
ROWS = {
    "emailevents_org_settings": [
        {"org_key": "org-1", "toggle_key": "artifact_created", "enabled": False, "updated_at": AT}
    ],
    "emailevents_deliveries": [
        {
            "event_id": "ev-1",
            "event_key": "user_invited",
            "recipient": "ada@acme.test",
            "status": "sent",
            "reason": "sent",
            "detail": "",
            "message_id": "pm-1",
            "claim": None,
            "created_at": AT,
            "updated_at": AT,
        }
    ],
    "emailevents_emits": [
        {
            "event_id": "ev-2",
            "event_key": "user_invited",
            "task_name": "emailevents.user_invited",
            "cuids": {"user": "u-1", "org": "org-1"},
            "state": "pending",
            "attempts": 2,
            "last_error": "OperationalError: Connection refused",
            "lease_until": None,
            "lease": None,
            "created_at": AT,
            "published_at": None,
        }
    ],
}


def first_release(engine: sa.Engine) -> None:
    FIRST_RELEASE.create_all(engine)
    with engine.begin() as connection:
        for name, rows in ROWS.items():
            connection.execute(FIRST_RELEASE.tables[name].insert(), rows)


def aware(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite gives back its timestamps without their zone (they were written in UTC)."""
    return {
        key: value.replace(tzinfo=value.tzinfo or UTC) if isinstance(value, datetime) else value
        for key, value in row.items()
    }


def url(engine: sa.Engine) -> str:
    """The engine's database as a URL a command can be given (PostgreSQL: its test schema)."""
    if engine.dialect.name == "sqlite":
        return engine.url.render_as_string(hide_password=False)
    with engine.connect() as connection:
        current = connection.exec_driver_sql("SELECT current_schema()").scalar()
    options = {"options": f"-csearch_path={current}"}
    return engine.url.update_query_dict(options).render_as_string(hide_password=False)


def db(*args: str) -> Any:
    return CliRunner().invoke(main, ["db", *args])


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    yield engine
    engine.dispose()


@pytest.mark.services
def test_a_first_release_database_upgrades_in_place_with_its_data(db_engine: sa.Engine) -> None:
    first_release(db_engine)
    check = db("check", "--url", url(db_engine))
    assert check.exit_code == 1, check.output
    assert sorted(check.output.splitlines()[:-1]) == [
        "emailevents_digest_items: table is missing",
        "emailevents_digests: table is missing",
        "emailevents_emits: column cancelled_at is missing",
        "emailevents_emits: column check_after is missing",
        "emailevents_emits: column send_at is missing",
        "emailevents_emits: index ix_emailevents_emits_state_check is missing",
        "emailevents_emits: index ix_emailevents_emits_state_send is missing",
        "emailevents_foreign_records: table is missing",
        "emailevents_message_events: table is missing",
        "emailevents_preferences: table is missing",
        "emailevents_suppressions: table is missing",
        "emailevents_throttle_slots: table is missing",
    ]
    assert check.output.splitlines()[-1] == (
        "run: emailevents db upgrade (the database is at no revision, this version at 0008)"
    )

    upgraded = db("upgrade", "--url", url(db_engine))
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.endswith(": upgraded from nothing to revision 0008\n")

    assert schema.differences(db_engine) == []
    assert schema.current(db_engine) == schema.head() == "0008"
    with db_engine.connect() as connection:
        for name, rows in ROWS.items():
            columns = list(rows[0])
            kept = connection.execute(sa.select(*metadata.tables[name].c[*columns])).all()
            assert [aware(row._asdict()) for row in kept] == rows, name
        assert connection.execute(sa.text("SELECT check_after FROM emailevents_emits")).all() == [
            (None,)
        ]
    check = db("check", "--url", url(db_engine))
    assert check.exit_code == 0, check.output
    assert "emailevents' tables match this version (0008)" in check.output


@pytest.mark.services
def test_migrations_make_exactly_the_tables_the_code_declares(db_engine: sa.Engine) -> None:
    """Fails when a table in ``emailevents.metadata`` changes without a migration."""
    assert schema.upgrade(db_engine) == (None, schema.head())
    assert schema.differences(db_engine) == []
    assert schema.upgrade(db_engine) == (schema.head(), schema.head())


def test_each_difference_is_named(sqlite: sa.Engine) -> None:
    schema.upgrade(sqlite)
    with sqlite.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE emailevents_deliveries DROP COLUMN detail")
        connection.exec_driver_sql("ALTER TABLE emailevents_org_settings ADD COLUMN legacy INT")
    assert sorted(schema.differences(sqlite)) == [
        "emailevents_deliveries: column detail is missing",
        "emailevents_org_settings: column legacy is not in this version's schema",
    ]


def test_a_database_with_only_some_of_our_tables_is_not_guessed_at(sqlite: sa.Engine) -> None:
    metadata.tables["emailevents_deliveries"].create(sqlite)
    with pytest.raises(ConfigurationError, match=r"only some of emailevents' tables"):
        schema.upgrade(sqlite)


def test_verify_names_the_missing_column_and_the_command(sqlite: sa.Engine) -> None:
    first_release(sqlite)
    with sqlite.connect() as connection, pytest.raises(ConfigurationError) as raised:
        schema.verify(connection)
    assert "emailevents_emits: column check_after is missing" in str(raised.value)
    assert "Run `emailevents db upgrade --app MODULE:ATTRIBUTE` (or --url URL)" in str(raised.value)

    schema.upgrade(sqlite)
    statements: list[str] = []
    sa.event.listen(sqlite, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with sqlite.connect() as connection:
        schema.verify(connection)
        checked = len(statements)
        schema.verify(connection)
    assert checked > 0
    assert len(statements) == checked, "verified once per engine and process"


def test_db_takes_the_database_from_the_application(tmp_path: Path) -> None:
    source = demo_app(tmp_path / "app.sqlite3", tables=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        with app_module(tmp_path, source, patch, prefix="schemaapp") as app:
            current = db("current", "--app", app.ref)
            upgraded = db("upgrade", "--app", app.ref)
    assert current.exit_code == 0, current.output
    assert current.output.endswith("at none (never upgraded); this version's newest is 0008\n")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.endswith("upgraded from nothing to revision 0008\n")


@pytest.mark.parametrize("args", [[], ["--url", "sqlite://", "--app", "x:events"]])
def test_db_wants_one_database(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAILEVENTS_APP", raising=False)
    result = db("check", *args)
    assert result.exit_code == 2
    assert "give --url or --app (or set EMAILEVENTS_APP), one of them" in result.output


def test_an_unreachable_database_is_one_line_without_its_password() -> None:
    result = db("current", "--url", "postgresql+psycopg://app:s3cret@127.0.0.1:1/none")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: postgresql+psycopg://app:***@127.0.0.1:1/none: the database cannot be reached: "
    )
    assert "s3cret" not in result.output


OLD_SCHEMA_APP = """\
from pathlib import Path

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, OutboxSender
from emailevents.demo import hooks
from emailevents.demo.run import REGISTRY

HERE = Path(__file__).parent
celery = Celery("oldschema", broker="filesystem://", set_as_current=False)
celery.conf.broker_transport_options = {
    "data_folder_in": str(HERE / "broker"),
    "data_folder_out": str(HERE / "broker"),
    "control_folder": str(HERE / "broker" / "control"),
    "polling_interval": 0.05,
}
engine = sa.create_engine(f"sqlite:///{HERE / 'app.sqlite3'}")
events = EmailEvents(
    REGISTRY,
    celery=celery,
    session_factory=sessionmaker(engine),
    sender=OutboxSender(),
    context={"site_url": hooks.site_url},
)
"""


@pytest.fixture
def old_schema_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An application whose database holds emailevents' tables as the first release made them."""
    from emailevents.demo import models  # noqa: PLC0415

    (tmp_path / "broker" / "control").mkdir(parents=True)
    with app_module(tmp_path, OLD_SCHEMA_APP, monkeypatch, prefix="oldschema") as module:
        models.Base.metadata.create_all(module.engine)
        first_release(module.engine)
        yield module


def test_emit_with_a_session_on_old_tables_raises_naming_the_command(old_schema_app: Any) -> None:
    events = old_schema_app.events
    cuids = {"user": "u", "org": "o", "invitation": "i"}
    with events.session_factory() as session, pytest.raises(ConfigurationError) as raised:
        events.emit("user_invited", session=session, **cuids)
    assert "emailevents_emits: column check_after is missing" in str(raised.value)
    assert "emailevents db upgrade" in str(raised.value)
    schema.upgrade(old_schema_app.engine)
    with events.session_factory() as session:
        events.emit("user_invited", session=session, **cuids)
        session.rollback()


@pytest.mark.slow
def test_a_worker_on_old_tables_does_not_consume_and_says_why(
    old_schema_app: Any, tmp_path: Path
) -> None:
    receipt = old_schema_app.events.emit("user_invited", user="u", org="o", invitation="i")
    queued = sorted((tmp_path / "broker").glob("*.msg"))
    assert len(queued) == 1, "the emit waits in the broker"
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"{old_schema_app.__name__}:celery",
            "worker",
            "-P",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the worker does not consume: emailevents' tables are older than this version" in (
        done.stderr
    )
    assert "Run `emailevents db upgrade" in done.stderr
    assert sorted((tmp_path / "broker").glob("*.msg")) == queued, "the message was not taken"
    assert receipt.event_id in queued[0].read_text()


def test_db_commands_print_one_json_document(sqlite: sa.Engine) -> None:
    first_release(sqlite)
    address = url(sqlite)
    check = db("check", "--url", address, "--format", "json")
    assert check.exit_code == 1
    assert json.loads(check.output) == {
        "database": address,
        "revision": None,
        "head": "0008",
        "differences": [
            "emailevents_digest_items: table is missing",
            "emailevents_digests: table is missing",
            "emailevents_foreign_records: table is missing",
            "emailevents_message_events: table is missing",
            "emailevents_preferences: table is missing",
            "emailevents_suppressions: table is missing",
            "emailevents_throttle_slots: table is missing",
            "emailevents_emits: column check_after is missing",
            "emailevents_emits: column send_at is missing",
            "emailevents_emits: column cancelled_at is missing",
            "emailevents_emits: index ix_emailevents_emits_state_check is missing",
            "emailevents_emits: index ix_emailevents_emits_state_send is missing",
        ],
    }
    upgraded = db("upgrade", "--url", address, "--format", "json")
    assert json.loads(upgraded.output) == {"database": address, "before": None, "after": "0008"}
    current = db("current", "--url", address, "--format", "json")
    assert json.loads(current.output) == {"database": address, "revision": "0008", "head": "0008"}
    assert db("check", "--url", address, "--format", "json").exit_code == 0

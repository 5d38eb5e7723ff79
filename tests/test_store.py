"""The delivery log's statements: claims and outcomes over JSON arrays, one statement each,
committing alone, and the same answers from the one-row-at-a-time statements other databases
get."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from emailevents import store
from emailevents.outcomes import Outcome, Reason, Status


@pytest.fixture
def engine(db_engine: sa.Engine) -> sa.Engine:
    store.metadata.create_all(db_engine)
    return db_engine


@pytest.fixture(params=["json", "row by row"])
def dialect_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing: the JSON-array statements, and those other databases get."""
    if request.param == "row by row":
        monkeypatch.setattr(store, "_speaks_json", lambda _session: None)
    return str(request.param)


class Statements:
    """The statements an engine runs (an executemany counts once)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def __enter__(self) -> Self:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)


def rows(engine: sa.Engine, event_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(store.deliveries).where(store.deliveries.c.event_id == event_id)
        )
        return {r.recipient: r for r in found}


def addresses(n: int) -> list[str]:
    return [f"member{i:04d}@acme.test" for i in range(n)]


def test_a_thousand_claims_are_one_statement(engine: sa.Engine) -> None:
    event_id = uuid.uuid4().hex
    with Session(engine) as session, Statements(engine) as statements:
        mine = store.claim(session, event_id, "team_broadcast", addresses(1000), "token-1")
    assert mine == set(addresses(1000))
    writes = [s for s in statements.seen if s.lstrip().upper().startswith("INSERT")]
    assert len(writes) == 1
    logged = rows(engine, event_id)
    assert len(logged) == 1000
    row = logged["member0999@acme.test"]
    assert (row.status, row.reason, row.claim, row.event_key, row.detail) == (
        "claimed",
        "claimed",
        "token-1",
        "team_broadcast",
        "",
    )


def test_a_second_claim_gets_only_the_new_recipients(engine: sa.Engine, dialect_path: str) -> None:
    event_id = uuid.uuid4().hex
    with Session(engine) as session:
        first = store.claim(session, event_id, "e", addresses(3), "token-1")
        second = store.claim(session, event_id, "e", addresses(5), "token-2")
    assert first == set(addresses(3))
    assert second == set(addresses(5)[3:])
    assert {r.claim for r in rows(engine, event_id).values()} == {"token-1", "token-2"}


def test_outcomes_are_one_statement_and_keep_every_field(
    engine: sa.Engine, dialect_path: str
) -> None:
    event_id = uuid.uuid4().hex
    recipients = addresses(600)
    detail = 'Quotes " and \\ backslashes, ünïcode, 💌, a\nnewline'
    outcomes = [
        Outcome(Status.SENT, Reason.SENT, r, "", f"msg-{i}") for i, r in enumerate(recipients)
    ]
    outcomes[7] = Outcome(Status.FAILED, Reason.REJECTED, recipients[7], detail, None)
    with Session(engine) as session:
        store.claim(session, event_id, "e", recipients, "token-1")
        with Statements(engine) as statements:
            store.record(session, event_id, outcomes, token="token-1")
            session.commit()
    updates = [s for s in statements.seen if re.search(r"^\s*UPDATE\b", s, re.MULTILINE)]
    if dialect_path == "json":
        assert len(updates) == 1
    logged = rows(engine, event_id)
    assert logged[recipients[0]].status == "sent"
    assert logged[recipients[0]].message_id == "msg-0"
    assert logged[recipients[599]].message_id == "msg-599"
    failed = logged[recipients[7]]
    assert (failed.status, failed.reason, failed.detail, failed.message_id) == (
        "failed",
        "rejected",
        detail,
        None,
    )


def test_outcomes_are_written_only_over_this_runs_claims(
    engine: sa.Engine, dialect_path: str
) -> None:
    event_id = uuid.uuid4().hex
    with Session(engine) as session:
        store.claim(session, event_id, "e", addresses(2), "token-1")
        sent = [Outcome(Status.SENT, Reason.SENT, r, "", "m") for r in addresses(2)]
        store.record(session, event_id, sent, token="someone-else")
        session.commit()
        assert {r.status for r in rows(engine, event_id).values()} == {"claimed"}
        store.record(session, event_id, sent[:1], token="token-1")
        store.record(session, event_id, sent, token="token-1")  # the first is no longer claimed
        session.commit()
    assert {r.status for r in rows(engine, event_id).values()} == {"sent"}


# synchronous_commit is PostgreSQL's; and pysqlite's savepoints need SQLAlchemy's recipe.
only_postgresql = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


@only_postgresql
@pytest.mark.parametrize(("flush_wait", "inside"), [(False, "off"), (True, "on")])
def test_an_outcome_without_flush_wait_commits_asynchronously_alone(
    engine: sa.Engine, flush_wait: bool, inside: str
) -> None:
    event_id = uuid.uuid4().hex
    sent = [Outcome(Status.SENT, Reason.SENT, "ada@acme.test", "", "m")]
    with Session(engine) as session:
        store.claim(session, event_id, "e", ["ada@acme.test"], "token-1")
        store.record(session, event_id, sent, token="token-1", flush_wait=flush_wait)
        show = sa.text("SHOW synchronous_commit")
        assert session.execute(show).scalar() == inside  # for this transaction
        session.commit()
        assert session.execute(show).scalar() == "on"  # and only for it
    assert rows(engine, event_id)["ada@acme.test"].status == "sent"


def test_statements_commit_alone_on_an_engine(engine: sa.Engine) -> None:
    event_id = uuid.uuid4().hex
    with Session(engine) as session:
        store.statements_commit_alone(session)
        store.claim(session, event_id, "e", ["ada@acme.test"], "token-1")
        store.statements_commit_alone(session)
        sent = [Outcome(Status.SENT, Reason.SENT, "ada@acme.test", "", "m")]
        store.record(session, event_id, sent, token="token-1")
        # Committed before commit(): another connection sees it already.
        assert rows(engine, event_id)["ada@acme.test"].status == "sent"


def test_other_databases_keep_their_transactions(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Their row-by-row writes use savepoints, which need a transaction around them.
    monkeypatch.setattr(store, "_speaks_json", lambda _session: None)
    event_id = uuid.uuid4().hex
    with Session(engine) as session:
        store.statements_commit_alone(session)
        store.insert_ignoring_duplicates(
            session,
            [
                {
                    "event_id": event_id,
                    "event_key": "e",
                    "recipient": "ada@acme.test",
                    "status": "claimed",
                    "reason": "claimed",
                }
            ],
        )
        options = session.connection().get_execution_options()
        assert options.get("isolation_level") != "AUTOCOMMIT"
        session.commit()
    assert set(rows(engine, event_id)) == {"ada@acme.test"}


@pytest.fixture
def outer_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@only_postgresql
def test_a_session_in_an_outer_transaction_is_left_as_it_is(
    engine: sa.Engine, outer_transaction: sa.Connection
) -> None:
    event_id = uuid.uuid4().hex
    with Session(bind=outer_transaction, join_transaction_mode="create_savepoint") as session:
        store.statements_commit_alone(session)
        store.claim(session, event_id, "e", ["ada@acme.test"], "token-1")
    assert rows(engine, event_id) == {}  # the outer transaction holds it, uncommitted


@pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
def test_sqlite_reads_the_outcomes_once_and_finds_each_row_by_index(engine: sa.Engine) -> None:
    # Planned the other way round, SQLite scans the JSON array once per delivery row of the
    # emit: 5,000 outcomes took 17 s. The plan is what a test can hold without a stopwatch.
    statement = store._RECORD_ROWS["sqlite", True, True]
    compiled = statement.compile(dialect=engine.dialect)
    parameters = {
        "b_rows": "[]",
        "b_updated_at": None,
        "b_event_id": "e",
        "b_token": "t",
        "status_1": "claimed",
    }
    ordered = [parameters[name] for name in compiled.positiontup or []]
    with engine.connect() as conn:
        plan = [
            row[-1]
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(ordered))
        ]
    search = next(i for i, step in enumerate(plan) if "emailevents_deliveries" in step)
    assert "(event_id=? AND recipient=?)" in plan[search], plan
    assert any(step.startswith("MATERIALIZE") for step in plan[:search]), plan


@pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
def test_sqlite_writers_of_one_process_take_turns(engine: sa.Engine) -> None:
    # 16 threads claim and record at once, each statement committing alone: none may fail
    # with "database is locked", and each sees exactly its own rows.
    def run(n: int) -> set[str]:
        event_id = f"ev-{n}"
        with Session(engine) as session:
            store.statements_commit_alone(session)
            mine = store.claim(session, event_id, "e", addresses(20), f"token-{n}")
            store.statements_commit_alone(session)
            sent = [Outcome(Status.SENT, Reason.SENT, r, "", f"m-{n}") for r in mine]
            store.record(session, event_id, sent, token=f"token-{n}")
            session.commit()
        return mine

    with ThreadPoolExecutor(16) as pool:
        claimed = list(pool.map(run, range(64)))
    assert all(mine == set(addresses(20)) for mine in claimed)
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.select(store.deliveries.c.status, sa.func.count()).group_by(
                store.deliveries.c.status
            )
        ).all()
    assert statuses == [("sent", 64 * 20)]

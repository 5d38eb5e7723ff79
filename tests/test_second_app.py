"""A second, unrelated application runs on the library unchanged: its own models and registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, OutboxSender, Reason, Status
from emailevents.testing import Runs, worker

REGISTRY = """\
version: 1
defaults:
  from: "Harbour Library <loans@library.test>"
  message_stream: library-notices
  org: library
  toggles: lending.hooks:email_enabled
entities:
  Library: {model: "lending.models:Library", key: public_id}
  Member: {model: "lending.models:Member", key: public_id}
  Loan: {model: "lending.models:Loan", key: public_id}
events:
  loan_overdue:
    toggle: overdue_notices
    template: 4401
    entities: {library: Library, loan: Loan}
    subject: "{loan.book.title} is {loan.days_overdue} days overdue"
    to: ["{loan.member.email}", "{loan.guarantor.email}"]
    data:
      member_name: "{loan.member.name}"
      book_title: "{loan.book.title}"
      due: "{loan.due}"
      days_overdue: "{loan.days_overdue}"
    build: lending.hooks:loan_extras
    payload: lending.hooks:OverduePayload
  library_closing:
    toggle: always
    template: library-closing
    entities: {library: Library, staff: Member}
    subject: "{library.name} closes early today"
    recipients: lending.hooks:all_members
    data:
      library: "{library.name}"
      signed: "{staff.name}, {{front desk}}"
"""


@pytest.fixture
def lending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture
def app(
    lending: None, db_engine: sa.Engine, tmp_path: Path, celery_app: Celery, outbox: OutboxSender
) -> tuple[EmailEvents, sessionmaker[Session]]:
    from lending import models  # noqa: PLC0415 - importable only once the fixture set the path

    registry = tmp_path / "library-events.yaml"
    registry.write_text(REGISTRY)
    models.Base.metadata.create_all(db_engine)
    factory = sessionmaker(db_engine)
    events = EmailEvents(
        registry, celery=celery_app, session_factory=factory, sender=outbox, set_default=False
    )
    events.create_tables(db_engine)
    with factory() as session:
        harbour = models.Library(public_id="lib-harbour", name="Harbour Library")
        ann = models.Member(public_id="m-ann", library=harbour, name="Ann", email="ann@x.test")
        bo = models.Member(public_id="m-bo", library=harbour, name="Bo", email="BO@x.test")
        book = models.Book(isbn="978-0", title="Moby-Dick")
        session.add_all(
            [
                harbour,
                ann,
                bo,
                book,
                models.Loan(
                    public_id="loan-1",
                    member=ann,
                    guarantor=bo,
                    book=book,
                    due=dt.date(2026, 11, 1),
                    days_overdue=26,
                ),
                models.Loan(
                    public_id="loan-2",
                    member=ann,
                    guarantor=None,
                    book=book,
                    due=dt.date(2026, 11, 27),
                    days_overdue=0,
                ),
            ]
        )
        session.commit()
    return events, factory


def test_an_unrelated_application_sends_through_a_real_worker(
    app: tuple[EmailEvents, sessionmaker[Session]], celery_app: Celery, outbox: OutboxSender
) -> None:
    events, _ = app
    with Runs() as runs, worker(celery_app):
        overdue = events.emit("loan_overdue", library="lib-harbour", loan="loan-1")
        closing = events.emit("library_closing", library="lib-harbour", staff="m-bo")
        runs.wait(overdue, closing)

    sent = {(m.message.event_key, m.to): m.message for m in outbox.messages}
    assert set(sent) == {
        ("loan_overdue", "ann@x.test"),
        ("loan_overdue", "BO@x.test"),
        ("library_closing", "ann@x.test"),
        ("library_closing", "BO@x.test"),
    }
    message = sent["loan_overdue", "ann@x.test"]
    assert message.template == 4401
    assert message.message_stream == "library-notices"
    assert message.from_ == "Harbour Library <loans@library.test>"
    assert dict(message.template_model) == {
        "subject": "Moby-Dick is 26 days overdue",
        "member_name": "Ann",
        "book_title": "Moby-Dick",
        "due": "2026-11-01",
        "days_overdue": 26,
        "renewals_left": 2,
        "branches": ["Main", "Harbour"],
    }
    closing_model = sent["library_closing", "ann@x.test"].template_model
    assert dict(closing_model) == {
        "subject": "Harbour Library closes early today",
        "library": "Harbour Library",
        "signed": "Bo, {front desk}",
    }


def test_the_applications_own_toggle_store_decides(
    app: tuple[EmailEvents, sessionmaker[Session]], outbox: OutboxSender
) -> None:
    events, factory = app
    with factory() as session:
        session.execute(sa.text("UPDATE lend_libraries SET muted = 'overdue_notices'"))
        session.commit()
    result = events.run("loan_overdue", "ev-muted", library="lib-harbour", loan="loan-1")
    assert [(o.status, o.reason) for o in result.outcomes] == [(Status.SKIPPED, Reason.TOGGLE_OFF)]
    closing = events.run("library_closing", "ev-closing", library="lib-harbour", staff="m-bo")
    assert len(closing.with_status(Status.SENT)) == 2


def test_a_payload_class_rejecting_the_data_fails_the_emit_naming_the_field(
    app: tuple[EmailEvents, sessionmaker[Session]], outbox: OutboxSender
) -> None:
    events, _ = app
    result = events.run("loan_overdue", "ev-bad", library="lib-harbour", loan="loan-2")
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.INVALID_PAYLOAD)
    assert outcome.detail.startswith("days_overdue: Input should be greater than or equal to 1")
    assert len(outbox) == 0


def test_a_missing_optional_recipient_is_skipped_with_its_expression(
    app: tuple[EmailEvents, sessionmaker[Session]], outbox: OutboxSender
) -> None:
    events, factory = app
    with factory() as session:
        session.execute(sa.text("UPDATE lend_loans SET days_overdue = 3"))
        session.commit()
    result = events.run("loan_overdue", "ev-one", library="lib-harbour", loan="loan-2")
    assert [o.recipient for o in result.with_status(Status.SENT)] == ["ann@x.test"]
    (skipped,) = result.with_status(Status.SKIPPED)
    assert skipped.reason is Reason.INVALID_RECIPIENT
    assert skipped.recipient == "<to[1] {loan.guarantor.email}>"

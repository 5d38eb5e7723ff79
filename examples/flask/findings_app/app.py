"""The web application, its Celery app, and the email events both share.

The tables:       flask --app findings_app.app init-db
The web process:  flask --app findings_app.app run
The worker:       celery -A findings_app.app:celery_app worker --loglevel=INFO

Both import this module, so both create the same ``EmailEvents``: the web process to emit, the
worker to run the tasks it registers on ``celery_app``.
"""

import os
from pathlib import Path
from typing import Any

import click
from celery import Celery
from flask import Flask, abort, request
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from werkzeug.exceptions import HTTPException

from emailevents import EmailEvents, PostmarkSender, emit

from .models import Finding, Organization, User, db

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
SEVERITIES = ("low", "medium", "high")

app = Flask(__name__)
# Flask-SQLAlchemy puts a relative SQLite path in the instance folder: ./instance/findings.sqlite3
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "sqlite:///findings.sqlite3")
app.config["SITE_URL"] = os.environ.get("SITE_URL", "http://127.0.0.1:5000")
db.init_app(app)

celery_app = Celery("findings_app", broker=BROKER_URL)
if BROKER_URL == "filesystem://":
    # kombu's filesystem transport: each message is a file in ./broker, no server to run. For
    # development on one machine; set CELERY_BROKER_URL (Redis, RabbitMQ) for anything else.
    Path("broker").mkdir(exist_ok=True)
    celery_app.conf.broker_transport_options = {
        "data_folder_in": "broker",
        "data_folder_out": "broker",
        "control_folder": "broker/control",
        "polling_interval": 0.1,
    }

# A task runs outside any request, where db.session does not work: its sessions come from a
# plain sessionmaker on Flask-SQLAlchemy's engine.
with app.app_context():
    SessionLocal = sessionmaker(db.engine)

events = EmailEvents(
    Path(__file__).parent.parent / "events.yaml",
    celery=celery_app,
    session_factory=SessionLocal,
    # POSTMARK_SERVER_TOKEN and POSTMARK_API_URL say where mail goes. Only the worker sends, so
    # only the worker needs the token.
    sender=PostmarkSender(),
    context={"site_url": app.config["SITE_URL"]},
)


@app.cli.command("init-db")
def init_db() -> None:
    """Create the tables, with Acme and two members to try the API with."""
    # For the example: a real application runs its migrations instead, Flask-Migrate for its
    # own tables and `emailevents db upgrade --app findings_app.app:events` for emailevents'.
    db.create_all()
    events.create_tables(db.engine)
    acme = Organization(name="Acme", slug="acme")
    db.session.add_all(
        [
            User(email="ada@acme.test", full_name="Ada Lovelace", organization=acme),
            User(email="owen@acme.test", full_name="Owen Ortiz", organization=acme),
        ]
    )
    db.session.commit()
    click.echo("created the tables, and Acme with ada@acme.test and owen@acme.test")


@app.errorhandler(HTTPException)
def error_as_json(error: HTTPException) -> tuple[dict[str, Any], int]:
    return {"error": error.description}, error.code or 500


def current_user() -> User:
    """Who is asking. Stands in for your authentication: the X-User header names a member."""
    email = request.headers.get("X-User", "")
    user = db.session.scalars(select(User).filter_by(email=email)).one_or_none()
    if user is None:
        abort(401, f"no user {email!r}")
    return user


@app.post("/findings")
def report_finding() -> tuple[dict[str, Any], int]:
    """Report a finding; its assignee gets an email once the transaction commits."""
    finding = add_finding(current_user(), request.get_json())
    db.session.commit()
    return as_json(finding), 201


@app.post("/findings/import")
def import_findings() -> tuple[list[dict[str, Any]], int]:
    """Report several findings, all or none. When one fails, the request ends without a commit:
    Flask-SQLAlchemy rolls its session back at the end of the request, and the emails of the
    findings before it go with it."""
    user = current_user()
    findings = [add_finding(user, item) for item in request.get_json()]
    db.session.commit()
    return [as_json(finding) for finding in findings], 201


def add_finding(user: User, item: dict[str, Any]) -> Finding:
    org = user.organization
    title, severity = item.get("title"), item.get("severity", "medium")
    if not isinstance(title, str) or not title.strip() or severity not in SEVERITIES:
        abort(400, f"a finding needs a title and a severity out of {', '.join(SEVERITIES)}")
    assignee = db.session.scalars(
        select(User).filter_by(email=item.get("assignee"), organization_id=org.id)
    ).one_or_none()
    if assignee is None:
        abort(422, f"{item.get('assignee')!r} is not a member of {org.name}")
    finding = Finding(
        title=title, severity=severity, organization=org, reporter=user, assignee=assignee
    )
    db.session.add(finding)
    db.session.flush()  # gives the finding its cuid
    # Written in this transaction, published to the broker when it commits.
    emit(
        "finding_reported",
        user=user.cuid,
        org=org.cuid,
        finding=finding.cuid,
        session=db.session,
    )
    return finding


def as_json(finding: Finding) -> dict[str, Any]:
    return {
        "cuid": finding.cuid,
        "title": finding.title,
        "severity": finding.severity,
        "assignee": finding.assignee.email,
    }

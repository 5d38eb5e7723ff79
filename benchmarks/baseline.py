"""The hand-written tasks the engine is measured against.

Written exactly in the pattern of ``reference/async-email-pattern.md``: a task per email that
takes CUIDs, opens a worker session, fetches each entity by CUID, checks the org toggle, builds the
template data as a dict, and sends through the ``postmarker`` client. Nothing is recorded: the
pattern has no delivery log, no claim, no retry bookkeeping.

Where the pattern leaves a choice open, the baseline takes the faster one, so that the comparison
is with well-written hand-written code: one postmarker client per thread, reused (a new client per
send would open a new connection each time; one client shared by every thread is not safe, as
``requests.Session`` is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any

from celery import Celery, Task
from postmarker.core import PostmarkClient
from sqlalchemy.orm import Session

from emailevents.store import org_settings

from .models import Finding, Organization, Team, User, site_url

__all__ = ["HandWritten", "register"]

logger = logging.getLogger("benchmarks.baseline")

FROM = "Acme Notifications <notifications@acme.test>"

# The pattern's `_is_email_event_enabled_for_org` reads a settings table; the baseline reads the
# same table the engine keeps, so both sides run the same query.
_SETTINGS = org_settings


class EmailTemplate(Enum):
    """Step 3 of the pattern: the template enum, and Postmark's template for each entry."""

    MODEL_FINDING_CREATED = 6
    TEAM_BROADCAST = 10


TEMPLATES = {
    EmailTemplate.MODEL_FINDING_CREATED: "model-finding-created",
    EmailTemplate.TEAM_BROADCAST: "team-broadcast",
}


class PostMarkEmailSender:
    """The pattern's sender: postmarker's template send, one client per thread."""

    def __init__(self, server_token: str, api_url: str, timeout: float = 30.0) -> None:
        self.server_token = server_token
        self.api_url = api_url
        self.timeout = timeout
        self._local = threading.local()

    def client(self) -> PostmarkClient:
        client: PostmarkClient | None = getattr(self._local, "client", None)
        if client is None:
            client = PostmarkClient(
                server_token=self.server_token,
                root_api_url=self.api_url,
                timeout=self.timeout,
            )
            self._local.client = client
        return client

    def send_email(
        self, data: dict[str, Any], to_emails: list[str], template_id: EmailTemplate, tag: str
    ) -> None:
        client = self.client()
        for to in to_emails:  # one message per recipient: recipients never see each other
            client.emails.send_with_template(
                TemplateAlias=TEMPLATES[template_id],
                TemplateModel=data,
                From=FROM,
                To=to,
                Tag=tag,
                MessageStream="outbound",
            )


class HandWritten:
    """The two tasks, registered on the benchmark's Celery app (see :func:`register`)."""

    def __init__(self, on_finding_created: Task, on_team_broadcast: Task) -> None:
        self.on_finding_created = on_finding_created
        self.on_team_broadcast = on_team_broadcast


def register(  # noqa: C901 - the pattern's task, email logic and helpers, per email
    app: Celery, session_factory: Callable[[], Session], sender: PostMarkEmailSender
) -> HandWritten:
    """Step 1 of the pattern, for two emails: the tasks, on ``app``."""

    @contextmanager
    def celery_db_session() -> Iterator[Session]:
        session = session_factory()
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()

    def _is_email_event_enabled_for_org(session: Session, org_cuid: str, key: str) -> bool:
        enabled = session.execute(
            _SETTINGS.select()
            .with_only_columns(_SETTINGS.c.enabled)
            .where(_SETTINGS.c.org_key == org_cuid, _SETTINGS.c.toggle_key == key)
        ).scalar_one_or_none()
        return enabled is not False

    # Step 2 of the pattern: the email logic, one method per email.
    def on_model_finding_created_email(user: User, org: Organization, finding: Finding) -> None:
        data = {
            "subject": f"New finding in {org.name}: {finding.title}",
            "org_name": org.name,
            "actor_name": user.full_name,
            "finding_title": finding.title,
            "url": f"{site_url(org)}/findings/{finding.cuid}",
        }
        sender.send_email(
            data=data,
            to_emails=[finding.owner.email],
            template_id=EmailTemplate.MODEL_FINDING_CREATED,
            tag="model_finding_created",
        )

    def on_team_broadcast_email(user: User, org: Organization, team: Team) -> None:
        data = {
            "subject": f"{user.full_name} wrote to {team.name}",
            "org_name": org.name,
            "actor_name": user.full_name,
            "team_name": team.name,
            "url": f"{site_url(org)}/teams/{team.cuid}",
        }
        sender.send_email(
            data=data,
            to_emails=[member.email for member in team.members],
            template_id=EmailTemplate.TEAM_BROADCAST,
            tag="team_broadcast",
        )

    @app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
        bind=True, name="bench.handwritten.on_model_finding_created", shared=False
    )
    def on_model_finding_created(
        self: Task,  # noqa: ARG001 - bind=True, as in the pattern
        user_cuid: str,
        org_cuid: str,
        finding_cuid: str,
    ) -> None:
        """Celery task for the model-finding-created email."""
        with celery_db_session() as session:
            user = session.query(User).filter_by(cuid=user_cuid).first()
            org = session.query(Organization).filter_by(cuid=org_cuid).first()
            finding = session.query(Finding).filter_by(cuid=finding_cuid).first()

            if not user or not org or not finding:
                logger.warning("Could not find entities for email notification")
                return

            if not _is_email_event_enabled_for_org(session, org.cuid, "artifact_created"):
                logger.info("Email event disabled by org settings")
                return

            on_model_finding_created_email(user, org, finding)

    @app.task(  # type: ignore[untyped-decorator]  # celery has no type hints
        bind=True, name="bench.handwritten.on_team_broadcast", shared=False
    )
    def on_team_broadcast(
        self: Task,  # noqa: ARG001 - bind=True, as in the pattern
        user_cuid: str,
        org_cuid: str,
        team_cuid: str,
    ) -> None:
        """Celery task for the team broadcast: the hand-written fan-out loop."""
        with celery_db_session() as session:
            user = session.query(User).filter_by(cuid=user_cuid).first()
            org = session.query(Organization).filter_by(cuid=org_cuid).first()
            team = session.query(Team).filter_by(cuid=team_cuid).first()

            if not user or not org or not team:
                logger.warning("Could not find entities for email notification")
                return

            if not _is_email_event_enabled_for_org(
                session, org.cuid, "workflow_broadcast_notification"
            ):
                logger.info("Email event disabled by org settings")
                return

            on_team_broadcast_email(user, org, team)

    return HandWritten(on_model_finding_created, on_team_broadcast)

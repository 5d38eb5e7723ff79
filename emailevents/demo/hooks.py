"""Application callables that the demo's events.yaml refers to.

``site_url`` is a context value: the engine calls it with the event's entities whose names match
its parameters. The others are ``recipients:`` callables, called the same way (plus ``session``
when they ask for it); they return users, whose ``email`` attribute is the address.
"""

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from emailevents.demo.models import (
    ModelComment,
    ModelStakeholder,
    MonitoringBreach,
    Organization,
    User,
)


def site_url(org: Organization) -> str:
    """Return the organization's own site, the base of every link in the demo's emails."""
    return f"https://{org.slug}.acme.test"


def _users(stakeholders: Iterable[ModelStakeholder], *, exclude_user_id: int | None) -> list[User]:
    """Return the stakeholders' users once each, in stakeholder order, without one user."""
    seen: set[int] = set()
    users: list[User] = []
    for stakeholder in stakeholders:
        if stakeholder.user_id == exclude_user_id or stakeholder.user_id in seen:
            continue
        seen.add(stakeholder.user_id)
        users.append(stakeholder.user)
    return users


def stakeholders_of_comment(comment: ModelComment) -> list[User]:
    """Return the stakeholders of the commented model, except the comment's author."""
    return _users(comment.inventory_model.stakeholders, exclude_user_id=comment.author_id)


def stakeholders_of_breach(breach: MonitoringBreach) -> list[User]:
    """Return every stakeholder of the model whose monitoring metric was breached."""
    return _users(breach.inventory_model.stakeholders, exclude_user_id=None)


def org_members(session: Session, org: Organization) -> list[User]:
    """Return every user of the organization, in id order (the broadcast fan-out)."""
    members = session.scalars(
        select(User).where(User.organization_id == org.id).order_by(User.id)
    ).all()
    return list(members)


__all__ = ["org_members", "site_url", "stakeholders_of_breach", "stakeholders_of_comment"]

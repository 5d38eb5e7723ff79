"""Callables and classes the test registries name with ``module:attr``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from .models import Organization, Project, User

NOT_CALLABLE = 42


def org_members(org: Organization, session: Session) -> list[User]:
    return list(org.members)


def project_people(project: Project, user: User | None = None) -> list[str]:
    return [project.owner.email, *([user.email] if user else [])]


def wants_colour(org: Organization, colour: str) -> list[str]:
    return []


def positional_only(org: Organization, /) -> list[str]:
    return []


def extras_for_org(org: Organization, **kwargs: Any) -> dict[str, Any]:
    return {"seats": org.seats}


def email_enabled(session: Session, org: Organization, toggle_key: str) -> bool:
    return True


def toggles_without_key(session: Session, org: Organization) -> bool:
    return True


def site_url(org: Organization) -> str:
    return f"https://{org.cuid}.acme.test"


def moon_phase(moon: object) -> str:
    return "full"


class ProjectPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    subject: str
    title: str


class NarrowPayload(BaseModel):
    """Takes only two of the values the test registry's event builds, and needs one more."""

    subject: str
    title: str
    sponsor: str


class NotAModel:
    pass


class Namespace:
    """Holds a callable one dotted step below the module: ``hooks:Namespace.members``."""

    members = staticmethod(org_members)

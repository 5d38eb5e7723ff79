"""Rows of the registry test models in a real database, for tests that run their events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from .models import Base, Organization, Project, Stage, User


@dataclass(frozen=True)
class World:
    """The session factory of the database and the CUIDs (``ref`` for the project) of its rows."""

    factory: sessionmaker[Session]
    org: str
    user: str
    owner: str
    project: str

    def cuids(self) -> dict[str, str]:
        """The CUIDs of the test registry's ``project_created``: user, org, project."""
        return {"user": self.user, "org": self.org, "project": self.project}


def create_world(engine: sa.Engine, *, project_title: str = "Retail Credit PD") -> World:
    """Create the models' tables and one organization, two users and a project; commit."""
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    acme = Organization(cuid="org-acme", name="Acme Risk", seats=12, founded=dt.date(2001, 2, 3))
    ada = User(cuid="user-ada", email="ada@acme.test", full_name="Ada Lovelace", organization=acme)
    owen = User(cuid="user-owen", email="owen@acme.test", full_name="Owen Ortiz", nickname="O")
    project = Project(
        ref="p-1",
        title=project_title,
        budget=Decimal("12.50"),
        score=None,
        stage=Stage.LIVE,
        settings={"colour": "blue"},
        created_at=dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC),
        owner=owen,
        organization=acme,
    )
    with factory() as session:
        session.add_all([acme, ada, owen, project])
        session.commit()
    return World(factory, org="org-acme", user="user-ada", owner="user-owen", project="p-1")

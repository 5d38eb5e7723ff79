"""SQLAlchemy models the test registries point at: each kind of attribute a path can reach."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from functools import cached_property
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Numeric, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.ext.hybrid import hybrid_method, hybrid_property
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)


class Base(DeclarativeBase):
    """Declarative base of the registry test models (tables prefixed ``registry_app_``)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Numeric(12, 2)}


class Stage(enum.Enum):
    DRAFT = "draft"
    LIVE = "live"


class Organization(Base):
    __tablename__ = "registry_app_organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    seats: Mapped[int]
    founded: Mapped[dt.date | None]

    members: Mapped[list[User]] = relationship(back_populates="organization")
    projects: Mapped[list[Project]] = relationship(back_populates="organization")


class User(Base):
    __tablename__ = "registry_app_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200))
    nickname: Mapped[str | None] = mapped_column(String(50))
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("registry_app_organizations.id"))

    organization: Mapped[Organization | None] = relationship(back_populates="members")

    @property
    def display_name(self) -> str:
        return self.nickname or self.full_name

    @hybrid_property
    def domain(self) -> str:
        return self.email.partition("@")[2]

    @hybrid_method
    def is_in(self, org: Organization) -> bool:
        return self.organization_id == org.id

    def greeting(self) -> str:
        return f"Hello {self.full_name}"


class Project(Base):
    """Loaded by ``ref`` rather than ``cuid``, and with one column of each interesting type."""

    __tablename__ = "registry_app_projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    budget: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    score: Mapped[float | None]
    stage: Mapped[Stage]
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    owner_id: Mapped[int] = mapped_column(ForeignKey("registry_app_users.id"))
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("registry_app_users.id"))
    organization_id: Mapped[int] = mapped_column(ForeignKey("registry_app_organizations.id"))

    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    reviewer: Mapped[User | None] = relationship(foreign_keys=[reviewer_id])
    organization: Mapped[Organization] = relationship(back_populates="projects")


ScopedSession = scoped_session(sessionmaker())


class QueryProperty:
    """Flask-SQLAlchemy's ``Model.query``, in short: a descriptor that gives a query."""

    def __get__(self, obj: object, cls: type[Any]) -> Any:
        return ScopedSession.query(cls)


class Note(AsyncAttrs, Base):
    """What libraries put on a model besides its columns, next to what the application does."""

    __tablename__ = "registry_app_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    body: Mapped[str] = mapped_column(String(2000))

    query = ScopedSession.query_property()  # SQLAlchemy's
    flask_query = QueryProperty()  # another library's descriptor
    KIND = "note"  # a plain value the application declares
    Stage = Stage  # a class the application keeps on the model

    @cached_property
    def summary(self) -> str:
        return self.body[:20]


class NotMapped:
    """A plain class: not something an entity type can name."""

    cuid = "not-a-column"

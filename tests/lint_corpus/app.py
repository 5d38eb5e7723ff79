"""The application the lint corpus's registries point at: models, callables, payload classes."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the corpus models (tables prefixed ``lint_corpus_``)."""


class Organization(Base):
    __tablename__ = "lint_corpus_organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(64))


class User(Base):
    __tablename__ = "lint_corpus_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200))
    nickname: Mapped[str | None] = mapped_column(String(50))


class Finding(Base):
    __tablename__ = "lint_corpus_findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    org_id: Mapped[int] = mapped_column(ForeignKey("lint_corpus_organizations.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("lint_corpus_users.id"))

    org: Mapped[Organization] = relationship()
    owner: Mapped[User | None] = relationship()


def site_url(org: Organization) -> str:
    """A context value: the organization's site."""
    return f"https://{org.slug}.acme.test"


def watchers(finding: Finding) -> list[User]:
    """A ``recipients:`` callable."""
    return [finding.owner] if finding.owner else []


def for_project(project: object) -> list[str]:
    """A ``recipients:`` callable asking for an entity no event has."""
    return []


def finding_extras(finding: Finding) -> dict[str, str]:
    """A ``build:`` callable: values the registry cannot express."""
    return {"severity_label": finding.severity.upper()}


class FindingEmail(BaseModel):
    """A ``payload:`` class for the finding email."""

    subject: str
    title: str


class TaggedFindingEmail(BaseModel):
    """A ``payload:`` class whose ``tags`` is a list."""

    subject: str
    tags: list[str]

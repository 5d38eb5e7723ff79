"""The benchmark's world: organizations, users, findings, and teams of users (a fan-out).

Both sides read the same rows: the engine through ``events.yaml``, the hand-written tasks
(:mod:`benchmarks.baseline`) with ``session.query(...)`` as the reference pattern does.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "bench_organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(64))


class Team(Base):
    __tablename__ = "bench_teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))

    members: Mapped[list[User]] = relationship(back_populates="team", order_by="User.id")


class User(Base):
    __tablename__ = "bench_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("bench_teams.id"), index=True)

    team: Mapped[Team | None] = relationship(back_populates="members")


class Finding(Base):
    __tablename__ = "bench_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    title: Mapped[str] = mapped_column(String(300))
    owner_id: Mapped[int] = mapped_column(ForeignKey("bench_users.id"))

    owner: Mapped[User] = relationship()


def team_members(team: Team) -> list[User]:
    """``recipients:`` of the fan-out event: every member of the team, one message each."""
    return list(team.members)


def site_url(org: Organization) -> str:
    """The context value both sides put in their links."""
    return f"https://{org.slug}.acme.test"

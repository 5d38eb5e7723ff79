"""The fault tests' own small world: organizations, people, and teams of people (a fan-out)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Org(Base):
    __tablename__ = "fault_orgs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))


class Team(Base):
    __tablename__ = "fault_teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))

    members: Mapped[list[Person]] = relationship(back_populates="team", order_by="Person.id")


class Person(Base):
    __tablename__ = "fault_people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("fault_teams.id"))

    team: Mapped[Team | None] = relationship(back_populates="members")


def team_members(team: Team) -> list[Person]:
    """`recipients:` of the team events: every member, one message each."""
    return list(team.members)

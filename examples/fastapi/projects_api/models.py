"""The application's tables. Every model an email talks about has a unique ``cuid`` column."""

import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_cuid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    name: Mapped[str]
    slug: Mapped[str] = mapped_column(unique=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    email: Mapped[str] = mapped_column(unique=True)
    full_name: Mapped[str]
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))

    organization: Mapped[Organization] = relationship()


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    name: Mapped[str]
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    organization: Mapped[Organization] = relationship()
    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])

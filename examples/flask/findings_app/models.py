"""The application's tables, on Flask-SQLAlchemy. Every model an email talks about has a unique
``cuid`` column."""

import uuid
from typing import TYPE_CHECKING

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_cuid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

# db.Model is made at run time, and mypy cannot use it as a base class (python/mypy#8603): it
# checks the models against Base, which db.Model is made from.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


class Organization(Model):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    name: Mapped[str]
    slug: Mapped[str] = mapped_column(unique=True)


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    email: Mapped[str] = mapped_column(unique=True)
    full_name: Mapped[str]
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))

    organization: Mapped[Organization] = relationship()


class Finding(Model):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_cuid)
    title: Mapped[str]
    severity: Mapped[str]
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    reporter_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assignee_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    organization: Mapped[Organization] = relationship()
    reporter: Mapped[User] = relationship(foreign_keys=[reporter_id])
    assignee: Mapped[User] = relationship(foreign_keys=[assignee_id])

"""The lending library's models: no `cuid` columns, an organization called `library`."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Library(Base):
    __tablename__ = "lend_libraries"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str]
    muted: Mapped[str] = mapped_column(default="")  # comma-separated email keys switched off


class Member(Base):
    __tablename__ = "lend_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("lend_libraries.id"))
    name: Mapped[str]
    email: Mapped[str]
    library: Mapped[Library] = relationship()


class Book(Base):
    __tablename__ = "lend_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    isbn: Mapped[str] = mapped_column(String(20), unique=True)
    title: Mapped[str]


class Loan(Base):
    __tablename__ = "lend_loans"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("lend_members.id"))
    guarantor_id: Mapped[int | None] = mapped_column(ForeignKey("lend_members.id"))
    book_id: Mapped[int] = mapped_column(ForeignKey("lend_books.id"))
    due: Mapped[dt.date]
    days_overdue: Mapped[int]
    member: Mapped[Member] = relationship(foreign_keys=[member_id])
    guarantor: Mapped[Member | None] = relationship(foreign_keys=[guarantor_id])
    book: Mapped[Book] = relationship()

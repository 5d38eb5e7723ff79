"""A mapped class SQLAlchemy cannot configure: its relationship names a class that is nowhere.

It has a registry of its own so that it can never break the other models; the corpus test
disposes of that registry and forgets the module afterwards.
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class BrokenBase(DeclarativeBase):
    pass


class Orphan(BrokenBase):
    __tablename__ = "lint_corpus_orphans"

    id: Mapped[int] = mapped_column(primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32))
    parent = relationship("Nowhere")

"""The lending library's own callables: its toggle store, recipients, extra data, payload."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Library, Loan, Member


def email_enabled(session: Session, org: Library, toggle_key: str) -> bool:
    return toggle_key not in org.muted.split(",")


def all_members(session: Session, library: Library) -> list[Member]:
    return list(session.scalars(select(Member).where(Member.library_id == library.id)))


def loan_extras(loan: Loan) -> dict[str, object]:
    return {"renewals_left": 2, "branches": ["Main", "Harbour"]}


class OverduePayload(BaseModel):
    subject: str
    member_name: str
    book_title: str
    due: dt.date
    days_overdue: int = Field(ge=1)
    renewals_left: int
    branches: list[str]

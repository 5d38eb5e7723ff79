"""SQLAlchemy models of the demo world: the seed team's organizations, models and their artifacts.

Every entity has an integer ``id`` primary key and a unique, indexed ``cuid`` string, the only
identifier that crosses the queue. Tables are prefixed ``demo_`` so they never clash with an
application's own tables when the demo shares a database with it.
"""

import secrets
import string

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

_CUID_ALPHABET = string.digits + string.ascii_lowercase
_CUID_BODY_LENGTH = 24


def new_cuid() -> str:
    """Return a new collision-resistant id: ``c`` followed by 24 lowercase base36 characters."""
    return "c" + "".join(secrets.choice(_CUID_ALPHABET) for _ in range(_CUID_BODY_LENGTH))


class Base(DeclarativeBase):
    """Declarative base of the demo models (``Base.metadata`` holds only ``demo_*`` tables)."""


class _Identified:
    """Columns shared by every demo entity."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cuid: Mapped[str] = mapped_column(String(32), unique=True, index=True, default=new_cuid)


class Organization(_Identified, Base):
    __tablename__ = "demo_organizations"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(64), unique=True)

    def __repr__(self) -> str:
        return f"<Organization {self.slug} {self.cuid}>"


class User(_Identified, Base):
    __tablename__ = "demo_users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("demo_organizations.id"))

    organization: Mapped[Organization | None] = relationship()

    def __repr__(self) -> str:
        return f"<User {self.email} {self.cuid}>"


class InventoryModel(_Identified, Base):
    """A model in the organization's model inventory."""

    __tablename__ = "demo_inventory_models"

    name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[int] = mapped_column(ForeignKey("demo_organizations.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id"))

    organization: Mapped[Organization] = relationship()
    owner: Mapped[User] = relationship()
    stakeholders: Mapped[list["ModelStakeholder"]] = relationship(
        back_populates="inventory_model", order_by="ModelStakeholder.id"
    )

    def __repr__(self) -> str:
        return f"<InventoryModel {self.name!r} {self.cuid}>"


class ModelStakeholder(_Identified, Base):
    """A user's role on an inventory model (owner, developer, validator, ...)."""

    __tablename__ = "demo_model_stakeholders"

    inventory_model_id: Mapped[int] = mapped_column(ForeignKey("demo_inventory_models.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id"))
    role: Mapped[str] = mapped_column(String(64))

    inventory_model: Mapped[InventoryModel] = relationship(back_populates="stakeholders")
    user: Mapped[User] = relationship()


class Invitation(_Identified, Base):
    """An invitation to join an organization, sent to an address that has no user yet."""

    __tablename__ = "demo_invitations"

    email: Mapped[str] = mapped_column(String(320))
    organization_id: Mapped[int] = mapped_column(ForeignKey("demo_organizations.id"))
    invited_by_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id"))
    role: Mapped[str] = mapped_column(String(64))

    organization: Mapped[Organization] = relationship()
    invited_by: Mapped[User] = relationship()


class ModelFinding(_Identified, Base):
    """A validation finding raised against an inventory model."""

    __tablename__ = "demo_model_findings"

    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(32))
    inventory_model_id: Mapped[int] = mapped_column(ForeignKey("demo_inventory_models.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("demo_users.id"))

    inventory_model: Mapped[InventoryModel] = relationship()
    owner: Mapped[User | None] = relationship()


class ModelComment(_Identified, Base):
    """A comment on a section of an inventory model's documentation."""

    __tablename__ = "demo_model_comments"

    body: Mapped[str] = mapped_column(Text)
    section: Mapped[str] = mapped_column(String(200))
    inventory_model_id: Mapped[int] = mapped_column(ForeignKey("demo_inventory_models.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id"))

    inventory_model: Mapped[InventoryModel] = relationship()
    author: Mapped[User] = relationship()


class WorkflowTransition(_Identified, Base):
    """A step of an inventory model's approval workflow."""

    __tablename__ = "demo_workflow_transitions"

    inventory_model_id: Mapped[int] = mapped_column(ForeignKey("demo_inventory_models.id"))
    from_status: Mapped[str] = mapped_column(String(64))
    to_status: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("demo_users.id"))

    inventory_model: Mapped[InventoryModel] = relationship()
    assignee: Mapped[User | None] = relationship()


class MonitoringBreach(_Identified, Base):
    """An ongoing-monitoring metric of an inventory model that crossed its threshold."""

    __tablename__ = "demo_monitoring_breaches"

    inventory_model_id: Mapped[int] = mapped_column(ForeignKey("demo_inventory_models.id"))
    metric: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)
    observed: Mapped[float] = mapped_column(Float)

    inventory_model: Mapped[InventoryModel] = relationship()


class BroadcastNotification(_Identified, Base):
    """A message an organization's admins send to every member."""

    __tablename__ = "demo_broadcast_notifications"

    organization_id: Mapped[int] = mapped_column(ForeignKey("demo_organizations.id"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)

    organization: Mapped[Organization] = relationship()


__all__ = [
    "Base",
    "BroadcastNotification",
    "InventoryModel",
    "Invitation",
    "ModelComment",
    "ModelFinding",
    "ModelStakeholder",
    "MonitoringBreach",
    "Organization",
    "User",
    "WorkflowTransition",
    "new_cuid",
]

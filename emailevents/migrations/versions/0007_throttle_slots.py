"""Throttles: each recipient's slots of an event's (or a group's) budget.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emailevents_throttle_slots",
        sa.Column("scope", sa.String(320), primary_key=True),
        sa.Column("recipient", sa.String(320), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("scope", "recipient", "event_id", name="uq_emailevents_throttle_event"),
    )


def downgrade() -> None:
    op.drop_table("emailevents_throttle_slots")

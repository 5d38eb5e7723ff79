"""Every message's timeline: Postmark's webhook records (delivered, bounced, opened, ...), and
the count of records about messages emailevents did not send.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emailevents_message_events",
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True)),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_emailevents_message_events_event",
        "emailevents_message_events",
        ["event_id", "recipient"],
    )
    op.create_table(
        "emailevents_foreign_records",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("record_type", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("emailevents_foreign_records")
    op.drop_index("ix_emailevents_message_events_event", "emailevents_message_events")
    op.drop_table("emailevents_message_events")

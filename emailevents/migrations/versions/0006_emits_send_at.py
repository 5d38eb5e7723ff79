"""Scheduled sends: when a scheduled emit is due, and when it was cancelled.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emailevents_emits") as table:
        table.add_column(sa.Column("send_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True)))
        # The relay's query for due emits: state = 'scheduled' AND send_at <= now.
        table.create_index("ix_emailevents_emits_state_send", ["state", "send_at"])


def downgrade() -> None:
    with op.batch_alter_table("emailevents_emits") as table:
        table.drop_index("ix_emailevents_emits_state_send")
        table.drop_column("cancelled_at")
        table.drop_column("send_at")

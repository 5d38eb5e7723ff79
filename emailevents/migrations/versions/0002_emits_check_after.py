"""When the relay looks again at a published emit whose task settled no outcome.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emailevents_emits") as table:
        table.add_column(sa.Column("check_after", sa.DateTime(timezone=True)))
        table.create_index("ix_emailevents_emits_state_check", ["state", "check_after"])


def downgrade() -> None:
    with op.batch_alter_table("emailevents_emits") as table:
        table.drop_index("ix_emailevents_emits_state_check")
        table.drop_column("check_after")

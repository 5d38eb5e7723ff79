"""The suppression list: each message stream's addresses not to send to.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emailevents_suppressions",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("suppressed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(64)),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("emailevents_suppressions")

"""emailevents' first tables: organization toggles, the delivery log and emits kept for the relay.

The schema of every release before migrations shipped; ``emailevents db upgrade`` stamps a
database made then by ``create_tables()`` with the revision its columns match.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = ("emailevents",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emailevents_org_settings",
        sa.Column("org_key", sa.String(255), primary_key=True),
        sa.Column("toggle_key", sa.String(255), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "emailevents_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("claim", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("event_id", "recipient", name="uq_emailevents_delivery"),
    )
    op.create_index(
        "ix_emailevents_deliveries_key_created",
        "emailevents_deliveries",
        ["event_key", "created_at"],
    )
    op.create_table(
        "emailevents_emits",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("cuids", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("lease", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_emailevents_emits_state_created", "emailevents_emits", ["state", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("emailevents_emits")
    op.drop_table("emailevents_deliveries")
    op.drop_table("emailevents_org_settings")

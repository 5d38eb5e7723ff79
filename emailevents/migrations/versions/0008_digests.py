"""Digests: each recipient's digests of an event (or group), and the items emits add to them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emailevents_digests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("digest_key", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("check_after", sa.DateTime(timezone=True)),
    )
    open_only = sa.text("state = 'open'")
    op.create_index(
        "uq_emailevents_digests_open",
        "emailevents_digests",
        ["digest_key", "recipient"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
    )
    op.create_index(
        "ix_emailevents_digests_state_closes", "emailevents_digests", ["state", "closes_at"]
    )
    op.create_table(
        "emailevents_digest_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("digest_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("template_model", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("event_id", "recipient", name="uq_emailevents_digest_item"),
    )
    op.create_index(
        "ix_emailevents_digest_items_digest", "emailevents_digest_items", ["digest_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("emailevents_digest_items")
    op.drop_table("emailevents_digests")

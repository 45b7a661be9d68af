"""Feeds: consumers (firewalls that pull feeds, with hashed tokens), what each fetched, refused requests.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_consumers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("watches", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_consumers")),
        sa.UniqueConstraint("name", name=op.f("uq_feed_consumers_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_feed_consumers_token_hash")),
    )
    op.create_table(
        "feed_fetches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("version", sa.String(80), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("watch", sa.String(100), nullable=False),
        sa.Column("state_id", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["consumer_id"], ["feed_consumers.id"],
                                name=op.f("fk_feed_fetches_consumer_id_feed_consumers"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_fetches")),
        sa.UniqueConstraint("consumer_id", "path", "version", name=op.f("uq_feed_fetches_consumer_id")),
    )
    op.create_index(op.f("ix_feed_fetches_state_id"), "feed_fetches", ["state_id"])
    op.create_table(
        "feed_denials",
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_feed_denials")),
    )


def downgrade() -> None:
    op.drop_table("feed_denials")
    op.drop_index(op.f("ix_feed_fetches_state_id"), table_name="feed_fetches")
    op.drop_table("feed_fetches")
    op.drop_table("feed_consumers")

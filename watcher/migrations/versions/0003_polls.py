"""Polls: one row per attempt to fetch a cloud's newest file.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("publication_id", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        # A publication deleted later leaves its polls as history, pointing nowhere.
        sa.ForeignKeyConstraint(
            ["publication_id"], ["publications.id"], name=op.f("fk_polls_publication_id_publications"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polls")),
    )
    op.create_index("ix_polls_cloud_started_at", "polls", ["cloud", "started_at"])
    op.create_index(op.f("ix_polls_publication_id"), "polls", ["publication_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_polls_publication_id"), table_name="polls")
    op.drop_index("ix_polls_cloud_started_at", table_name="polls")
    op.drop_table("polls")

"""approved_states: the allow-list reviewers approved per watch; tickets gain kind and superseded_by; outbox
rows gain the event they announce.

A ticket now diffs against the watch's approved state, not against the
previous publication: a baseline ticket (nothing approved yet) has no
previous publication, so that column becomes nullable.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="change"))
        batch.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_tickets_superseded_by_tickets"), "tickets", ["superseded_by"], ["id"],
                                 ondelete="SET NULL")
        batch.alter_column("previous_publication_id", existing_type=sa.Integer(), nullable=True)
    op.create_table(
        "approved_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("watch", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removals_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_approved_states_ticket_id_tickets"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"],
                                name=op.f("fk_approved_states_publication_id_publications"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approved_states")),
    )
    op.create_index("ix_approved_states_cloud_watch", "approved_states", ["cloud", "watch", "id"])
    op.create_index(op.f("ix_approved_states_ticket_id"), "approved_states", ["ticket_id"])
    op.create_index(op.f("ix_approved_states_publication_id"), "approved_states", ["publication_id"])
    # A ticket is announced again when its state moves (approved, rejected, superseded, removal reminder).
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f("uq_outbox_ticket_id"), type_="unique")
        batch.add_column(sa.Column("event", sa.String(16), nullable=False, server_default="created"))
        batch.create_unique_constraint(op.f("uq_outbox_ticket_id"), ["ticket_id", "destination", "event"])


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE event <> 'created'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f("uq_outbox_ticket_id"), type_="unique")
        batch.drop_column("event")
        batch.create_unique_constraint(op.f("uq_outbox_ticket_id"), ["ticket_id", "destination"])
    op.drop_index(op.f("ix_approved_states_publication_id"), table_name="approved_states")
    op.drop_index(op.f("ix_approved_states_ticket_id"), table_name="approved_states")
    op.drop_index("ix_approved_states_cloud_watch", table_name="approved_states")
    op.drop_table("approved_states")
    # Tickets of the new kinds have no place in the old schema: baselines (no previous publication) go,
    # and superseded tickets read as rejected, the nearest old state.
    op.execute("DELETE FROM tickets WHERE previous_publication_id IS NULL")
    op.execute("UPDATE tickets SET state = 'rejected' WHERE state = 'superseded'")
    with op.batch_alter_table("tickets") as batch:
        batch.alter_column("previous_publication_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint(op.f("fk_tickets_superseded_by_tickets"), type_="foreignkey")
        batch.drop_column("superseded_by")
        batch.drop_column("kind")

"""entry_manifests: the newest publication's entries per cloud, for the next week's import.

A weekly import needs, for every tag published the week before, its name, id,
prefix count and the fingerprint of its entry's bytes. Read from
tag_versions that is ~3,000 rows (a quarter of an import on SQLite); here it
is one row per cloud, replaced by each import of a newer file. It is derived
data: when it is missing or belongs to another publication, the import reads
tag_versions instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entry_manifests",
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("names", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
        sa.Column("tag_ids", sa.LargeBinary(), nullable=False),
        sa.Column("prefix_counts", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"],
                                name=op.f("fk_entry_manifests_publication_id_publications"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cloud", name=op.f("pk_entry_manifests")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # One row per cloud, rewritten weekly: vacuum it after every rewrite, not after 50.
        op.execute("ALTER TABLE entry_manifests SET (autovacuum_vacuum_threshold = 1, "
                   "toast.autovacuum_vacuum_threshold = 1)")


def downgrade() -> None:
    op.drop_table("entry_manifests")

"""hook_marks: per cloud, the publication whose ticket hooks ran last (a stopped backfill owes the rest);
forced_imports: the failed plausibility checks of a publication imported with --force (they hold its tickets,
whichever run makes them).

Databases made before this revision get a mark on each cloud's newest
publication: the hooks of every earlier import ran in its own transaction, and
a backfill stopped before its hooks cannot be told apart afterwards, so the
mark says what was true for every run that finished.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""
import datetime as dt

from alembic import op
import sqlalchemy as sa

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    marks = op.create_table(
        "hook_marks",
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"],
                                name=op.f("fk_hook_marks_publication_id_publications"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cloud", name=op.f("pk_hook_marks")),
    )
    op.create_table(
        "forced_imports",
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"],
                                name=op.f("fk_forced_imports_publication_id_publications"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("publication_id", name=op.f("pk_forced_imports")),
    )
    newest = op.get_bind().execute(sa.text(
        "SELECT p.cloud, p.id FROM publications p WHERE p.file_date = "
        "(SELECT max(q.file_date) FROM publications q WHERE q.cloud = p.cloud)"
    )).all()
    now = dt.datetime.now(dt.timezone.utc)
    if newest:
        op.bulk_insert(marks, [{"cloud": cloud, "publication_id": id_, "marked_at": now} for cloud, id_ in newest])


def downgrade() -> None:
    op.drop_table("forced_imports")
    op.drop_table("hook_marks")

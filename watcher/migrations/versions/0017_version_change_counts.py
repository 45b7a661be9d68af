"""tag_versions.added_count and removed_count: how many prefixes each version added and removed.

The tag page's series showed each version's additions and removals by counting
the tag's prefix spans per first day and per end day at every first view (a
pass over ~25,000 index entries for AzureCloud over five years, about half of
the series' time). The import knows both numbers (its plan's per-tag change)
and now stores them with the version; an import into the past also sets them
on the versions of the publication after it (what they add and remove is then
against the new file's). Existing versions are counted here from the spans,
two grouped passes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tag_versions", sa.Column("added_count", sa.Integer(), nullable=True))
    op.add_column("tag_versions", sa.Column("removed_count", sa.Integer(), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE tag_versions SET added_count = 0, removed_count = 0"))
    # A span starts and ends on a day its tag has a version (the import writes a version whenever the set
    # changes), so a count per (tag, day) is the count of the version of that day.
    for column, day in (("added_count", "first_day"), ("removed_count", "until_day")):
        conn.execute(sa.text(
            f"UPDATE tag_versions SET {column} = c.n "
            f"FROM (SELECT tag_id, {day} AS day, count(*) AS n FROM prefix_spans WHERE {day} IS NOT NULL "
            f"GROUP BY tag_id, {day}) AS c "
            "WHERE tag_versions.tag_id = c.tag_id AND tag_versions.valid_from = c.day"))


def downgrade() -> None:
    op.drop_column("tag_versions", "removed_count")
    op.drop_column("tag_versions", "added_count")

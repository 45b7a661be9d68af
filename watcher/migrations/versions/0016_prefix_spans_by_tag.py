"""prefix_spans by tag: an index on (tag_id, first_day, until_day).

The spans are keyed by prefix first (address look-ups, the import's updates).
A tag's history (the tag page's series, and the count of its prefix sets'
sizes) reads the spans of one tag: without an index by tag that is a pass over
every span of the database (AzureCloud over five years: ~140,000 rows, ~10 ms
of the tag page's first view, and ~10 ms per tag for a count of every tag).
With the prefix in every index entry (the key's remaining column), the index
alone answers both reads.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_prefix_spans_tag_id", "prefix_spans", ["tag_id", "first_day", "until_day"])


def downgrade() -> None:
    op.drop_index("ix_prefix_spans_tag_id", table_name="prefix_spans")

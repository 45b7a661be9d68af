"""contents: an index on (hash, the four sizes), so that a set's sizes are read without its row.

The tag page's series reads, per version of the tag, the sizes of its prefix
set (migration 0015). On SQLite a contents row holds the set's text (often
several pages, in overflow pages chained one to the next) before the size
columns: reading a size walks that chain. For AzureCloud's 240 versions that
was two thirds of the series' read (1.2 ms of 1.5 on a warm connection,
3 ms on a new one). The index holds the hash and the sizes alone, and the
series reads it without the rows (on SQLite it names the index: the planner
would take the primary key's). PostgreSQL keeps large values out of the row
(TOAST) and can read the index alone too.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_contents_sizes", "contents",
                    ["hash", "v4_prefixes", "v6_prefixes", "v4_addresses", "v6_networks_64"])


def downgrade() -> None:
    op.drop_index("ix_contents_sizes", table_name="contents")

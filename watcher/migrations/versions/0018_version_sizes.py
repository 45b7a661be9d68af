"""tag_versions: each version carries its prefix set's sizes (copied from contents).

The tag page's series read, per version of the tag, the sizes of its set from
``contents`` (migration 0015): a join, a content row per version. On SQLite
that row holds the set's text (often several pages, chained one to the next)
before the size columns, and reading a size walks the chain; on PostgreSQL
each of AzureCloud's 240 versions was an index search and a heap fetch (half
of the read's 2.5 ms, and twice the planning). With the sizes on the
versions, the series reads the tag's versions alone. ``contents`` keeps its
sizes (a set is counted once, whichever tags share it); a version's are copied
from its set's once counted: here for the sets counted already, and later by
the first view of the tag or a server's warm-up (``store.series``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SIZES = ("v4_prefixes", "v6_prefixes", "v4_addresses", "v6_networks_64")


def upgrade() -> None:
    for name in SIZES:
        op.add_column("tag_versions", sa.Column(name, sa.BigInteger() if name.endswith(("addresses", "_64"))
                                                else sa.Integer(), nullable=True))
    # UPDATE ... FROM: SQLite 3.33 and PostgreSQL alike (migration 0017 relies on it too).
    op.get_bind().execute(sa.text(
        f"UPDATE tag_versions SET {', '.join(f'{name} = c.{name}' for name in SIZES)} FROM contents c "
        "WHERE c.hash = tag_versions.content_hash AND c.v4_prefixes IS NOT NULL"))


def downgrade() -> None:
    for name in reversed(SIZES):
        op.drop_column("tag_versions", name)

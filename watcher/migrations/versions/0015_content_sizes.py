"""content sizes: each stored prefix set's size per family, counted when it is stored.

``contents.v4_prefixes``, ``v6_prefixes``, ``v4_addresses`` and
``v6_networks_64`` (``address_space.family_sizes``): a tag's history reads its
versions' sizes in the query that reads the versions, instead of recounting
every version's set (the tag page's series: AzureCloud over five years took
~0.2 s of address arithmetic per view before). Existing rows are counted here,
from their texts (a delta decoded through its bases).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = (("v4_prefixes", sa.Integer), ("v6_prefixes", sa.Integer), ("v4_addresses", sa.BigInteger),
           ("v6_networks_64", sa.BigInteger))
log = logging.getLogger(__name__)
#: Contents counted per batch: their texts (AzureCloud's ~300 KB each) are decoded together.
BATCH = 200


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("contents", sa.Column(name, kind(), nullable=True))
    # The counting is address_space's (pure arithmetic), the decoding the store's: a delta's text needs its
    # bases, which load_texts reads and decodes in order.
    from watcher.address_space import stored_sizes
    from watcher.store.packing import MissingBase, load_texts, split_text

    def texts_of(batch: list[bytes]) -> dict:
        try:
            return load_texts(conn, batch, cached=False)
        except MissingBase:
            # A damaged delta chain (``watcher db check`` reports it) must not stop the upgrade: the readable
            # contents get their sizes, the others stay NULL and are counted when read, as a too-big one is.
            found = {}
            for digest in batch:
                try:
                    found.update(load_texts(conn, [digest], cached=False))
                except MissingBase:
                    log.warning("content %s: its delta's base is missing; its sizes are left to be counted "
                                "when read", digest.hex())
            return found

    conn = op.get_bind()
    contents = sa.table("contents", sa.column("hash", sa.LargeBinary),
                        *(sa.column(name, kind) for name, kind in COLUMNS))
    hashes = [bytes(h) for (h,) in conn.execute(sa.select(contents.c.hash).order_by(contents.c.hash))]
    for start in range(0, len(hashes), BATCH):
        texts = texts_of(hashes[start:start + BATCH])
        names = [f"n_{name}" for name, _ in COLUMNS]
        rows = [{"h": digest, **dict(zip(names, stored_sizes(split_text(found.text))))}
                for digest, found in texts.items()]
        if rows:
            conn.execute(sa.update(contents).where(contents.c.hash == sa.bindparam("h"))
                         .values({name: sa.bindparam(f"n_{name}") for name, _ in COLUMNS}), rows)


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("contents", name)

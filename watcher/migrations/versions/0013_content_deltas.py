"""content deltas: a big prefix set may be stored as a zstd delta against its tag's previous content.

``contents.base_hash`` names the content whose text is the delta's dictionary,
``contents.depth`` how many deltas lead down to a full copy (see
``watcher.store.packing``). Existing rows are full copies: NULL in both.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import zstandard

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("contents", sa.Column("base_hash", sa.LargeBinary(16), nullable=True))
    op.add_column("contents", sa.Column("depth", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Every delta becomes a full copy first, shallowest first: a delta of depth k has a base of
    # depth k - 1, already a full copy when its turn comes. Written here, not with the store's
    # code, so that this step keeps working whatever the store becomes.
    conn = op.get_bind()
    contents = sa.table("contents", sa.column("hash", sa.LargeBinary), sa.column("prefixes", sa.LargeBinary),
                        sa.column("base_hash", sa.LargeBinary), sa.column("depth", sa.Integer))
    depths = [d for (d,) in conn.execute(sa.select(contents.c.depth).where(contents.c.depth.is_not(None))
                                         .distinct().order_by(contents.c.depth))]
    compressor, plain = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    base_row = contents.alias("base")
    for depth in depths:
        rows = conn.execute(
            sa.select(contents.c.hash, contents.c.prefixes, base_row.c.prefixes)
            .join(base_row, base_row.c.hash == contents.c.base_hash).where(contents.c.depth == depth)
        ).all()
        for digest, packed, base_packed in rows:
            base_text = _full_text(plain, bytes(base_packed))
            dictionary = zstandard.ZstdCompressionDict(base_text, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            text = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(bytes(packed))
            conn.execute(
                sa.update(contents).where(contents.c.hash == digest)
                .values(prefixes=text if len(text) < 512 else compressor.compress(text), base_hash=None, depth=None)
            )
    left = conn.execute(sa.select(sa.func.count()).select_from(contents).where(contents.c.base_hash.is_not(None)))
    if left.scalar():  # a delta whose base is missing or deeper than it says: keep it rather than lose it
        raise RuntimeError("some contents are deltas that cannot be decoded: run `watcher db check`")
    op.drop_column("contents", "depth")
    op.drop_column("contents", "base_hash")


def _full_text(plain: zstandard.ZstdDecompressor, packed: bytes) -> bytes:
    """The text of a full copy as 0001-0011 store it: plain when short, zstd or zlib otherwise."""
    import zlib

    if packed[:4] == b"\x28\xb5\x2f\xfd":
        return plain.decompress(packed)
    if packed[:1] == b"x":
        return zlib.decompress(packed)
    return packed

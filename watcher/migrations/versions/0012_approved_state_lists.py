"""Large lists out of the JSON that every read decodes: approved_states gain ``lists`` and ``tags``, tickets ``target``.

An AzureCloud-sized state is ~450 KB of JSON, most of it the 13,000 exact
prefixes of its tags, which listing states and rendering snippets never read;
each read still moved and scanned all of it. ``tags`` and ``lists`` hold
JSON, zstd-compressed when long (~40 KB and ~35 KB for AzureCloud), and
``content`` keeps the publication alone. A ticket's ``target`` (every
watched tag's prefixes: what an approval records) leaves its ``context``,
which every render reads, for a column of its own, packed the same way.
Upgrade and downgrade convert every row.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""
import json

import sqlalchemy as sa
import zstandard
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESS_FROM = 512  # as watcher.store.sql: shorter values are stored as they are

_states = sa.table("approved_states", sa.column("id", sa.Integer()), sa.column("content", sa.Text()),
                   sa.column("lists", sa.LargeBinary()), sa.column("tags", sa.LargeBinary()))
_tickets = sa.table("tickets", sa.column("id", sa.Integer()), sa.column("context", sa.Text()),
                    sa.column("target", sa.LargeBinary()))


def _packed(value: object) -> bytes:
    encoded = json.dumps(value, sort_keys=True).encode()
    return encoded if len(encoded) < COMPRESS_FROM else zstandard.ZstdCompressor(level=1).compress(encoded)


def _unpacked(packed: bytes) -> object:
    data = bytes(packed)
    if data[:4] == ZSTD_MAGIC:
        data = zstandard.ZstdDecompressor().decompress(data)
    return json.loads(data)


def upgrade() -> None:
    with op.batch_alter_table("approved_states") as batch:
        batch.add_column(sa.Column("lists", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("tags", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    for row_id, content in conn.execute(sa.select(_states.c.id, _states.c.content)).all():
        old = json.loads(content)
        lists = {"final": old["final"], "before": old["before"]}
        if old.get("during") is not None:
            lists["during"] = old["during"]
        conn.execute(_states.update().where(_states.c.id == row_id).values(
            content=json.dumps({"publication": old["publication"]}, sort_keys=True),
            lists=_packed(lists), tags=_packed(old["tags"])))
    with op.batch_alter_table("approved_states") as batch:
        batch.alter_column("lists", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("tags", existing_type=sa.LargeBinary(), nullable=False)
    # Not in batch mode: on SQLite that rebuilds the table, and dropping the old one (foreign keys on) would
    # cascade to the tickets' events, outbox rows and approved states. A new column may be added in place.
    op.add_column("tickets", sa.Column("target", sa.LargeBinary(), nullable=True))
    for row_id, content in conn.execute(sa.select(_tickets.c.id, _tickets.c.context)).all():
        context = json.loads(content)
        target = context.pop("target", {})
        conn.execute(_tickets.update().where(_tickets.c.id == row_id).values(
            context=json.dumps(context, sort_keys=True), target=_packed(target)))


def downgrade() -> None:
    conn = op.get_bind()
    for row_id, content, target in conn.execute(sa.select(_tickets.c.id, _tickets.c.context, _tickets.c.target)).all():
        conn.execute(_tickets.update().where(_tickets.c.id == row_id).values(
            context=json.dumps({**json.loads(content), "target": _unpacked(target)}, sort_keys=True)))
    op.drop_column("tickets", "target")  # in place, as it was added (SQLite 3.35 and later)
    rows = conn.execute(sa.select(_states.c.id, _states.c.content, _states.c.lists, _states.c.tags)).all()
    for row_id, content, lists, tags in rows:
        kept = {k: v for k, v in _unpacked(lists).items() if k != "dropped"}  # made at approval since 0012
        merged = {**json.loads(content), **kept, "tags": _unpacked(tags)}
        conn.execute(_states.update().where(_states.c.id == row_id).values(
            content=json.dumps(merged, sort_keys=True)))
    with op.batch_alter_table("approved_states") as batch:
        batch.drop_column("tags")
        batch.drop_column("lists")

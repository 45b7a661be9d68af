"""prefix_spans: no foreign key to tags, and byte-order prefixes on PostgreSQL.

A first import writes ~93,000 spans. On PostgreSQL the foreign key fires one
trigger per row (three quarters of the import's time) and the prefix column
compared under the database's locale; spans are written only by the import,
which takes their tag ids from the tags table in the same transaction, and
tags are never deleted, so the key guarded nothing the import does not.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SQLITE_TABLE = """
CREATE TABLE {name} (
    prefix VARCHAR(43) NOT NULL,
    tag_id INTEGER NOT NULL,
    first_day INTEGER NOT NULL,
    until_day INTEGER,
    {foreign_key}CONSTRAINT pk_prefix_spans PRIMARY KEY (prefix, tag_id, first_day)
) WITHOUT ROWID
"""
_FOREIGN_KEY = "CONSTRAINT fk_prefix_spans_tag_id_tags FOREIGN KEY(tag_id) REFERENCES tags (id) ON DELETE CASCADE,\n    "


def _rebuild_sqlite(foreign_key: str) -> None:
    # SQLite cannot drop a constraint; Alembic's batch copy would lose WITHOUT ROWID.
    op.execute(_SQLITE_TABLE.format(name="prefix_spans_new", foreign_key=foreign_key))
    op.execute("INSERT INTO prefix_spans_new (prefix, tag_id, first_day, until_day) "
               "SELECT prefix, tag_id, first_day, until_day FROM prefix_spans")
    op.execute("DROP TABLE prefix_spans")
    op.execute("ALTER TABLE prefix_spans_new RENAME TO prefix_spans")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("")
        return
    op.drop_constraint("fk_prefix_spans_tag_id_tags", "prefix_spans", type_="foreignkey")
    op.execute('ALTER TABLE prefix_spans ALTER COLUMN prefix TYPE VARCHAR(43) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(_FOREIGN_KEY)
        return
    op.execute('ALTER TABLE prefix_spans ALTER COLUMN prefix TYPE VARCHAR(43) COLLATE "default"')
    op.create_foreign_key(
        "fk_prefix_spans_tag_id_tags", "prefix_spans", "tags", ["tag_id"], ["id"], ondelete="CASCADE"
    )

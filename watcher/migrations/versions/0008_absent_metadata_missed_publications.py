"""Absent metadata stays absent; publications record missed publications and parse warnings.

* ``tag_versions``: ``region``, ``region_id``, ``platform``, ``system_service``
  and ``network_features`` become nullable. Files published before August 2020
  have no ``regionId`` nor ``networkFeatures``; a made-up ``0`` would read as a
  real region id. Withdrawn versions, which never had metadata, become NULL.
* ``publications.missed_before``: how many publications the file's global
  changeNumber says were not seen between the previous stored publication and
  this one (0 when it rose by one, or went down: a reset is an anomaly).
* ``publications.parse_warnings``: a JSON list of the warnings parsing the file
  gave (wrong-typed optional metadata), NULL when there were none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: column, type, the value a NULL becomes on downgrade
_METADATA = (
    ("region", sa.String(100), "''"),
    ("region_id", sa.Integer(), "0"),
    ("platform", sa.String(100), "''"),
    ("system_service", sa.String(200), "''"),
    ("network_features", sa.String(200), "''"),
)


def upgrade() -> None:
    with op.batch_alter_table("tag_versions") as batch:
        for name, type_, _ in _METADATA:
            batch.alter_column(name, existing_type=type_, nullable=True)
    op.execute("UPDATE tag_versions SET region = NULL, region_id = NULL, platform = NULL, system_service = NULL, "
               "network_features = NULL WHERE NOT present")
    # Plain ALTER TABLE, never a batch copy: on SQLite, dropping the old publications table
    # would cascade to every row that references it (versions, tickets, polls).
    op.add_column("publications", sa.Column("missed_before", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("publications", sa.Column("parse_warnings", sa.Text(), nullable=True))
    # Publications already stored: count the gaps in the global changeNumber, oldest first.
    rows = op.get_bind().execute(sa.text(
        "SELECT id, cloud, change_number FROM publications ORDER BY cloud, file_date"
    )).all()
    previous: dict[str, int] = {}
    for id_, cloud, number in rows:
        before = previous.get(cloud)
        previous[cloud] = number
        if before is not None and number > before + 1:
            op.get_bind().execute(sa.text("UPDATE publications SET missed_before = :n WHERE id = :id"),
                                  {"n": number - before - 1, "id": id_})


def downgrade() -> None:
    for name in ("parse_warnings", "missed_before"):  # SQLite 3.35+ drops a plain column in place
        op.execute(f"ALTER TABLE publications DROP COLUMN {name}")
    for name, _, fill in _METADATA:
        op.execute(f"UPDATE tag_versions SET {name} = {fill} WHERE {name} IS NULL")
    with op.batch_alter_table("tag_versions") as batch:
        for name, type_, _ in _METADATA:
            batch.alter_column(name, existing_type=type_, nullable=False)

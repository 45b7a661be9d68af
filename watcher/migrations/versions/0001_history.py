"""Publications, tags, tag versions, contents and prefix spans.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("file_date", sa.Date(), nullable=False),
        sa.Column("change_number", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tag_count", sa.Integer(), nullable=False),
        sa.Column("prefix_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
        sa.UniqueConstraint("cloud", "file_date", name=op.f("uq_publications_cloud")),
    )
    op.create_index("ix_publications_cloud_sha256", "publications", ["cloud", "sha256"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("cloud", "name", name=op.f("uq_tags_cloud")),
    )
    op.create_table(
        "contents",
        sa.Column("hash", sa.LargeBinary(16), nullable=False),
        sa.Column("prefix_count", sa.Integer(), nullable=False),
        sa.Column("prefixes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_contents")),
    )
    op.create_table(
        "tag_versions",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Integer(), nullable=True),
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("change_number", sa.Integer(), nullable=True),
        sa.Column("region", sa.String(100), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(100), nullable=False),
        sa.Column("system_service", sa.String(200), nullable=False),
        sa.Column("network_features", sa.String(200), nullable=False),
        sa.Column("prefix_count", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(16), nullable=False),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_tag_versions_tag_id_tags"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["content_hash"], ["contents.hash"], name=op.f("fk_tag_versions_content_hash_contents")),
        sa.ForeignKeyConstraint(
            ["publication_id"], ["publications.id"], name=op.f("fk_tag_versions_publication_id_publications"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tag_id", "valid_from", name=op.f("pk_tag_versions")),
    )
    op.create_index("ix_tag_versions_valid_from", "tag_versions", ["valid_from"])
    op.create_index("ix_tag_versions_valid_until", "tag_versions", ["valid_until"])
    op.create_index(op.f("ix_tag_versions_content_hash"), "tag_versions", ["content_hash"])
    op.create_index(op.f("ix_tag_versions_publication_id"), "tag_versions", ["publication_id"])
    op.create_table(
        "prefix_spans",
        sa.Column("prefix", sa.String(43), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("first_day", sa.Integer(), nullable=False),
        sa.Column("until_day", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_prefix_spans_tag_id_tags"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("prefix", "tag_id", "first_day", name=op.f("pk_prefix_spans")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("prefix_spans")
    op.drop_index(op.f("ix_tag_versions_publication_id"), table_name="tag_versions")
    op.drop_index(op.f("ix_tag_versions_content_hash"), table_name="tag_versions")
    op.drop_index("ix_tag_versions_valid_until", table_name="tag_versions")
    op.drop_index("ix_tag_versions_valid_from", table_name="tag_versions")
    op.drop_table("tag_versions")
    op.drop_table("contents")
    op.drop_table("tags")
    op.drop_index("ix_publications_cloud_sha256", table_name="publications")
    op.drop_table("publications")

"""PLACEHOLDER — replaced by the tickets branch

Stands in for the tickets revision so that 0003 (polls) has its parent while
the branches are apart; it changes nothing. Drop it when merging the tickets
branch, whose 0002 takes its place.

Revision ID: 0002
Revises: 0001
"""
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

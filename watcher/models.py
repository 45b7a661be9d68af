"""SQLAlchemy 2 typed models: the schema the migrations create.

History is kept as change, not as weeks:

* ``publications`` — one row per imported file of a cloud.
* ``tags`` — one row per (cloud, tag name) ever seen.
* ``tag_versions`` — one row each time a tag's entry changes (prefix content,
  changeNumber or metadata) or the tag is withdrawn; a version holds from its
  ``valid_from`` day until the tag's next version.
* ``prefix_spans`` — one row per stretch of publications in which a tag had a
  prefix: present from ``first_day`` until (not including) ``until_day``;
  ``until_day`` is NULL while the prefix is still published.

Days are stored as ``YYYYMMDD`` integers: compact, sortable and readable.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def day_key(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def day_from_key(key: int) -> dt.date:
    return dt.date(key // 10000, key // 100 % 100, key % 100)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Publication(Base):
    __tablename__ = "publications"
    __table_args__ = (
        UniqueConstraint("cloud", "file_date"),
        Index("ix_publications_cloud_sha256", "cloud", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    file_date: Mapped[dt.date] = mapped_column(Date)
    change_number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    tag_count: Mapped[int] = mapped_column(Integer)
    prefix_count: Mapped[int] = mapped_column(Integer)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("cloud", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))


class TagVersion(Base):
    __tablename__ = "tag_versions"
    __table_args__ = (Index("ix_tag_versions_valid_from", "valid_from"),)

    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    valid_from: Mapped[int] = mapped_column(Integer, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), index=True)
    present: Mapped[bool] = mapped_column(Boolean)
    change_number: Mapped[int | None] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(100), default="")
    region_id: Mapped[int] = mapped_column(Integer, default=0)
    platform: Mapped[str] = mapped_column(String(100), default="")
    system_service: Mapped[str] = mapped_column(String(200), default="")
    network_features: Mapped[str] = mapped_column(String(200), default="")
    prefix_count: Mapped[int] = mapped_column(Integer, default=0)
    #: fingerprint of the canonical prefix set
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(16))
    #: fingerprint of the entry as published, to skip unchanged entries cheaply
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(16))


class PrefixSpan(Base):
    __tablename__ = "prefix_spans"
    __table_args__ = (
        Index("ix_prefix_spans_prefix", "prefix"),
        {"sqlite_with_rowid": False},
    )

    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(43), primary_key=True)
    first_day: Mapped[int] = mapped_column(Integer, primary_key=True)
    until_day: Mapped[int | None] = mapped_column(Integer)


class Poll(Base):
    """One attempt to poll a cloud (``polls``, revision 0003): when, from where, what came of it.

    ``url`` and ``error`` are redacted before they are written: no source
    credentials in the database. ``outcome`` is one of ``pipeline.POLL_OUTCOMES``.
    """

    __tablename__ = "polls"
    __table_args__ = (Index("ix_polls_cloud_started_at", "cloud", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    url: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    publication_id: Mapped[int | None] = mapped_column(ForeignKey("publications.id", ondelete="SET NULL"), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))

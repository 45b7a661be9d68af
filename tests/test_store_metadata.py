"""Revision 0008 on SQLite and PostgreSQL: absent metadata is NULL, publications count what they missed."""
from __future__ import annotations

import sqlalchemy as sa

from tests.factory import build_file, file_name
from watcher import db, store


def _versions(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT v.present, v.region, v.region_id, v.platform, v.system_service, v.network_features "
            "FROM tag_versions v JOIN tags t ON t.id = v.tag_id WHERE t.name = 'A' ORDER BY v.valid_from"))]


def test_a_withdrawn_version_stores_no_metadata_as_null(engine):
    store.import_bytes(engine, build_file({"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}), file_name("20240101"))
    store.import_bytes(engine, build_file({"B": ["10.1.0.0/24"]}, change_number=2), file_name("20240108"))
    assert _versions(engine) == [(True, "", 0, "Azure", "A", "API,NSG"), (False, None, None, None, None, None)]
    with engine.connect() as conn:
        latest = store.resolve_publication(conn, "public", "latest")
        assert store.versions_at(conn, "public", latest.day)["A"].metadata == store.NO_METADATA


def test_migration_0008_upgrades_and_downgrades_with_data(db_url):
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine)
        store.import_bytes(engine, build_file({"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}), file_name("20240101"))
        store.import_bytes(engine, build_file({"B": ["10.1.0.0/24"]}, change_number=4), file_name("20240108"))
        db.downgrade(engine, "0007")
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns("tag_versions")}
        assert not columns["region_id"]["nullable"]
        assert "missed_before" not in {c["name"] for c in sa.inspect(engine).get_columns("publications")}
        assert _versions(engine) == [(True, "", 0, "Azure", "A", "API,NSG"), (False, "", 0, "", "", "")]
        db.upgrade(engine, "0008")
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns("tag_versions")}
        assert all(columns[n]["nullable"] for n in ("region", "region_id", "platform", "system_service",
                                                      "network_features"))
        assert _versions(engine) == [(True, "", 0, "Azure", "A", "API,NSG"), (False, None, None, None, None, None)]
        with engine.connect() as conn:  # the gap 1 -> 4 is counted for publications stored before 0008
            assert [p.missed_before for p in store.publications(conn, "public")] == [0, 2]
            assert [p.parse_warnings for p in store.publications(conn, "public")] == [(), ()]
    finally:
        engine.dispose()


def test_parse_warnings_are_stored_as_a_json_list_or_null():
    from types import SimpleNamespace

    from watcher.store.importer import _parse_warnings

    assert _parse_warnings(SimpleNamespace(warnings=("tag 'A': regionId is not an integer",))) == \
        '["tag \'A\': regionId is not an integer"]'
    assert _parse_warnings(SimpleNamespace(warnings=())) is None
    assert _parse_warnings(SimpleNamespace()) is None  # a parser that has no warnings to give


def test_a_publication_reads_its_warnings_back(engine):
    store.import_bytes(engine, build_file({"A": ["10.0.0.0/24"]}), file_name("20240101"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE publications SET parse_warnings = :w"), {"w": '["tag \'A\': bad platform"]'})
    with engine.connect() as conn:
        [pub] = store.publications(conn, "public")
    assert pub.parse_warnings == ("tag 'A': bad platform",)
    assert pub.to_json()["parse_warnings"] == ["tag 'A': bad platform"]

"""Big prefix sets stored as deltas against their tag's previous content (``store.packing``)."""
from __future__ import annotations

import random

import sqlalchemy as sa

from tests.factory import build_file, file_name
from watcher import db, dbcheck, store
from watcher.models import Content
from watcher.store.packing import DELTA_FROM, MAX_DEPTH, texts_cache

WEEKS = [f"2025{month:02d}{day:02d}" for month in (1, 2, 3, 4, 5) for day in (1, 8, 15, 22)][:MAX_DEPTH + 6]


def weekly_sets(weeks: int, seed: int = 3) -> list[list[str]]:
    """A big tag's prefixes, week by week: ~1% replaced each week, as AzureCloud's."""
    rng = random.Random(seed)
    current = {f"10.{i // 250}.{i % 250}.0/24" for i in range(600)}
    sets = []
    for _ in range(weeks):
        sets.append(sorted(current))
        for prefix in rng.sample(sorted(current), 6):
            current.discard(prefix)
        while len(current) < 600:
            current.add(f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.0/24")
    return sets


def import_week(engine, day: str, big: list[str], number: int):
    tags = {"Big": big, "Small": ["10.255.0.0/24", f"10.255.{number}.0/24"]}
    return store.import_bytes(engine, build_file(tags, change_number=number), file_name(day))


def content_rows(engine):
    with engine.connect() as conn:
        return {bytes(h): (None if b is None else bytes(b), d)
                for h, b, d in conn.execute(sa.select(Content.hash, Content.base_hash, Content.depth))}


def snapshot_of(engine, tag: str, day: str):
    with engine.connect() as conn:
        found = store.snapshot(conn, "public", tag, store.resolve_publication(conn, "public", day))
    return None if found is None else list(found.prefixes)


def assert_every_week_reads_back(engine, weeks, sets):
    texts_cache.clear()  # read the stored rows, not what the imports left in the cache
    for day, expected in zip(weeks, sets):
        assert snapshot_of(engine, "Big", day) == expected
    with engine.connect() as conn:
        by_day = {day: store.tag_states(conn, "public", int(day), ["Big"])["Big"] for day in weeks}
    assert [sorted(state.prefixes) for state in by_day.values()] == sets
    report = dbcheck.check_database(engine)
    assert report.ok, report.to_json()


def test_a_chain_of_deltas_reads_back_and_is_bounded(engine):
    sets = weekly_sets(len(WEEKS))
    assert len("\n".join(sets[0])) >= DELTA_FROM
    for number, (day, big) in enumerate(zip(WEEKS, sets), start=1):
        import_week(engine, day, big, number)
    rows = content_rows(engine)
    depths = sorted(d for _, d in rows.values() if d is not None)
    # Week 1 is a full copy, weeks 2..MAX_DEPTH+1 deltas of depth 1..MAX_DEPTH, then a full copy again.
    assert depths == sorted(list(range(1, MAX_DEPTH + 1)) + list(range(1, len(WEEKS) - MAX_DEPTH - 1)))
    assert all(base in rows for base, _ in rows.values() if base is not None)
    full = [h for h, (b, _) in rows.items() if b is None]
    assert len(full) >= 2 + len(WEEKS)  # two full copies of Big, the small tag's sets, the empty set
    assert_every_week_reads_back(engine, WEEKS, sets)
    # A diff across the whole chain reads both ends through it.
    with engine.connect() as conn:
        old, new = (store.resolve_publication(conn, "public", d) for d in (WEEKS[0], WEEKS[-1]))
        diff = store.diff_publications(conn, "public", old, new)
    big = next(t for t in diff if t.tag == "Big")
    assert set(big.added) == set(sets[-1]) - set(sets[0]) and set(big.removed) == set(sets[0]) - set(sets[-1])


def test_a_delta_is_small_and_the_same_set_is_stored_once(engine):
    sets = weekly_sets(3)
    for number, day in enumerate(WEEKS[:2], start=1):
        import_week(engine, day, sets[number - 1], number)
    import_week(engine, WEEKS[2], sets[0], 3)  # back to week 1's set: no new content
    with engine.connect() as conn:
        sizes = dict(conn.execute(sa.select(Content.depth, sa.func.length(Content.prefixes))
                                  .where(Content.prefix_count == 600)).all())
    assert set(sizes) == {None, 1}
    # A week's delta is smaller than a compressed full copy, and a small part of the text.
    assert sizes[1] < sizes[None] and sizes[1] * 20 < len("\n".join(sets[1]))
    assert_every_week_reads_back(engine, WEEKS[:3], [sets[0], sets[1], sets[0]])


def test_files_imported_in_any_order_keep_every_content_decodable(engine):
    sets = weekly_sets(len(WEEKS), seed=11)
    order = list(range(len(WEEKS)))
    random.Random(7).shuffle(order)
    for index in order:
        import_week(engine, WEEKS[index], sets[index], index + 1)
    rows = content_rows(engine)
    assert any(d is not None for _, d in rows.values())  # some were stored as deltas
    assert max(d or 0 for _, d in rows.values()) <= MAX_DEPTH
    assert_every_week_reads_back(engine, WEEKS, sets)


def test_db_check_reports_a_delta_whose_base_is_gone_or_whose_depth_is_wrong(engine):
    sets = weekly_sets(4)
    for number, day in enumerate(WEEKS[:4], start=1):
        import_week(engine, day, sets[number - 1], number)
    rows = content_rows(engine)
    deepest = max((h for h in rows if rows[h][1]), key=lambda h: rows[h][1])
    second = next(h for h in rows if rows[h][1] == 1)
    with engine.begin() as conn:
        conn.execute(sa.update(Content.__table__).where(Content.hash == second).values(depth=5))
        conn.execute(sa.update(Content.__table__).where(Content.hash == deepest).values(base_hash=b"\x01" * 16))
    report = dbcheck.check_database(engine)
    contents = next(r for r in report.results if r.name == "stored prefixes pass the gate")
    text = "\n".join(contents.violations)
    assert not contents.ok
    assert f"content {deepest.hex()[:12]}…: cannot be read (MissingBase" in text
    assert f"content {second.hex()[:12]}…: a delta of depth 5, expected 1" in text
    assert contents.checked == len(rows)


def test_the_migration_down_turns_deltas_into_full_copies_and_up_again(db_url):
    engine = db.open_database(db_url)
    try:
        sets = weekly_sets(5)
        for number, day in enumerate(WEEKS[:5], start=1):
            import_week(engine, day, sets[number - 1], number)
        assert any(d for _, d in content_rows(engine).values())
        db.downgrade(engine, "0011")
        with engine.connect() as conn:
            assert {"base_hash", "depth"}.isdisjoint(c["name"] for c in sa.inspect(conn).get_columns("contents"))
            stored = {tuple(store.unpack(p)) for (p,) in conn.execute(sa.text(
                "SELECT prefixes FROM contents WHERE prefix_count = 600"))}
        assert stored == {tuple(s) for s in sets}  # each a full copy that reads alone
        db.upgrade(engine)
        assert all(d is None for _, d in content_rows(engine).values())
        assert_every_week_reads_back(engine, WEEKS[:5], sets[:5])
        import_week(engine, WEEKS[5], weekly_sets(6)[5], 6)  # and deltas are written again
        assert any(d for _, d in content_rows(engine).values())
        assert_every_week_reads_back(engine, WEEKS[:6], weekly_sets(6))
    finally:
        engine.dispose()

"""store.series.tag_series reads a tag's history from its prefix spans: its entries equal store.history's and its
sizes equal a recount of every version's snapshot, for a synthetic history imported out of order (spans split
and moved), on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import orjson
import sqlalchemy as sa

from benchmarks.synthetic import Generator
from tests.conftest import file_bytes
from watcher import address_space, store
from watcher.store import series

START = dt.date(2021, 3, 1)


def test_the_series_from_spans_equals_history_and_a_recount_of_each_version(engine: sa.Engine, servicetags_dir) -> None:
    base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
    files = list(Generator(orjson.loads(file_bytes(base)), "china", START, seed=5).weeks(24))
    late = {files[5].name, files[11].name, files[12].name, files[20].name}
    for file in [f for f in files if f.name not in late] + [f for f in files if f.name in late]:
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
    with engine.connect() as conn:
        pubs = {p.file_date: p for p in store.publications(conn, "china")}
        busiest = conn.execute(sa.text(
            "SELECT t.name FROM tags t JOIN tag_versions v ON v.tag_id = t.id WHERE t.cloud = 'china' "
            "GROUP BY t.name ORDER BY count(*) DESC, t.name LIMIT 6")).scalars().all()
        assert "AzureCloud" in busiest
        lengths = []
        for name in busiest:
            found = series.tag_series(conn, "china", name.lower())
            real, entries = store.history(conn, "china", name)
            assert found.name == real == name
            assert found.entries == entries
            lengths.append(len(entries))
            for entry in entries:
                snap = store.snapshot(conn, "china", name, pubs[entry.date]) if entry.present else None
                assert found.sizes[entry.date] == address_space.family_sizes(snap.prefixes if snap else ()), \
                    (name, entry.date)
        assert max(lengths) > 8 and sum(1 for n in lengths if n > 3) >= 3, lengths  # long histories compared

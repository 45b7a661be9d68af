"""The synthetic history generator writes Microsoft's old layout (no regionId/networkFeatures) and a future one
(an unknown property); the watcher imports both, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import orjson
import pytest
import sqlalchemy as sa

from benchmarks.synthetic import Generator
from tests.conftest import file_bytes
from watcher import store

START = dt.date(2020, 8, 3)


def _generator(servicetags_dir, **options) -> Generator:
    base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
    return Generator(orjson.loads(file_bytes(base)), "china", START, seed=3, **options)


def _properties(data: bytes) -> set[str]:
    return {key for entry in orjson.loads(data)["values"] for key in entry["properties"]}


@pytest.mark.parametrize("schema", ["old", "future"])
def test_synthetic_history_in_the_old_and_a_future_layout_imports(engine, servicetags_dir, schema):
    files = list(_generator(servicetags_dir, schema=schema).weeks(3))
    for file in files:
        keys = _properties(file.data)
        if schema == "old":
            assert not keys & {"regionId", "networkFeatures"} and "changeNumber" in keys
        else:
            assert "serviceEndpoints" in keys and "regionId" in keys
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM publications")).scalar_one() == 3
    assert files[1].changed_tags + files[2].changed_tags > 0


def test_the_layout_switches_on_the_day_microsoft_switched(engine, servicetags_dir):
    files = list(_generator(servicetags_dir, old_schema_until=dt.date(2020, 8, 27)).weeks(5))
    layouts = ["regionId" in _properties(f.data) for f in files]
    assert [f.date.isoformat() for f in files][3:] == ["2020-08-24", "2020-08-31"]
    assert layouts == [False, False, False, False, True]
    for file in files:
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"


def test_an_unknown_schema_is_refused(servicetags_dir):
    with pytest.raises(ValueError, match="unknown schema 'ancient'"):
        _generator(servicetags_dir, schema="ancient")

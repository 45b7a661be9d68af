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


def _numbers_and_prefixes(data: bytes) -> dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]]:
    return {e["name"]: (int(e["properties"]["changeNumber"]), tuple(e["properties"]["addressPrefixes"]),
                        tuple(e["properties"].get("networkFeatures") or ()))
            for e in orjson.loads(data)["values"]}


def test_an_archive_like_history_is_busier_first_keeps_and_resets_numbers_and_changes_features(servicetags_dir):
    from benchmarks.synthetic import like_the_archive

    weeks = 30
    shape = like_the_archive(START, weeks)
    assert shape["busy_weeks"] == 24 and shape["old_schema_until"] == START + dt.timedelta(weeks=11)
    plain = list(_generator(servicetags_dir).weeks(weeks))
    files = list(_generator(servicetags_dir, busy_weeks=shape["busy_weeks"]).weeks(weeks))
    busy = sum(f.changed_tags for f in files[1:24]) / 23
    calm = sum(f.changed_tags for f in plain[1:24]) / 23
    assert busy > 2.5 * calm, (busy, calm)
    # Some changed tags kept their number while their prefixes changed, as hundreds did in the real archive.
    kept = 0
    for before, after in zip(files, files[1:]):
        old, new = _numbers_and_prefixes(before.data), _numbers_and_prefixes(after.data)
        kept += sum(1 for name in old.keys() & new.keys()
                    if old[name][0] == new[name][0] and old[name][1] != new[name][1])
    assert kept > 0 and sum(f.kept_numbers for f in files) > 0
    # One week, mid-era, lowers every tag's number while changing prefixes.
    renumbered = [i for i, f in enumerate(files) if f.renumbered]
    assert renumbered == [12]
    old, new = _numbers_and_prefixes(files[11].data), _numbers_and_prefixes(files[12].data)
    assert all(new[n][0] < old[n][0] for n in old.keys() & new.keys() if old[n][0] > 3)
    assert any(new[n][1] != old[n][1] for n in old.keys() & new.keys())
    # Some weeks change a tag's networkFeatures only.
    assert any(old[n][2] != new[n][2] and old[n][1] == new[n][1]
               for a, b in zip(files, files[1:])
               for old, new in [(_numbers_and_prefixes(a.data), _numbers_and_prefixes(b.data))]
               for n in old.keys() & new.keys())


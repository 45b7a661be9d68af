from watcher import store
from tests.conftest import file_bytes, plain_name


def test_import_two_weeks(engine, public_files):
    first = store.import_bytes(engine, file_bytes(public_files[0]), plain_name(public_files[0]))
    second = store.import_bytes(engine, file_bytes(public_files[1]), plain_name(public_files[1]))
    assert first.outcome == second.outcome == "imported"
    assert len(second.changed_tags) == 37

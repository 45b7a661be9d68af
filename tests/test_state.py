"""The approved state: the phase arithmetic (pure), and its storage with history on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.ticket_helpers import import_made, make_settings, utc, week
from watcher import db, models, render, review, state, tickets
from watcher.store import sql
from watcher.errors import NotFoundError
from watcher.settings import RegistryWatch


def test_removals_wait_for_the_later_of_publication_plus_delay_and_the_decision():
    assert state.removals_time(dt.date(2025, 10, 28), 7, utc(2025, 10, 29, 9)) == utc(2025, 11, 4)
    assert state.removals_time(dt.date(2025, 10, 28), 7, utc(2025, 11, 20, 9)) == utc(2025, 11, 20, 9)
    assert state.removals_time(dt.date(2025, 10, 28), 0, utc(2025, 10, 27)) == utc(2025, 10, 28)
    # SQLite hands back naive datetimes: they are UTC.
    assert state.removals_time(dt.date(2025, 10, 28), 7, dt.datetime(2025, 12, 1)) == utc(2025, 12, 1)


def test_effective_is_old_and_new_until_the_removal_date_then_new():
    before = {"v4": ["10.0.0.0/24", "10.0.1.0/24"], "v6": ["2001:db8::/48"]}
    final = {"v4": ["10.0.1.0/24", "10.0.2.0/24"], "v6": ["2001:db8::/49"]}
    at = utc(2025, 11, 4)
    assert state.effective_lists(before, final, at, at - dt.timedelta(seconds=1)) == {
        "v4": ["10.0.0.0/23", "10.0.2.0/24"], "v6": ["2001:db8::/48"]}
    assert state.effective_lists(before, final, at, at) == final
    assert state.effective_lists(before, final, None, at + dt.timedelta(days=999))["v4"] == ["10.0.0.0/23",
                                                                                            "10.0.2.0/24"]
    assert state.effective_lists(state.empty_lists(), final, at, at - dt.timedelta(days=1)) == final


def test_family_lists_are_collapsed_sorted_and_split():
    assert state.family_lists(["10.0.1.0/24", "2001:db8::/33", "10.0.0.0/24", "2001:db8:8000::/33", "9.0.0.0/8"]) == {
        "v4": ["9.0.0.0/8", "10.0.0.0/23"], "v6": ["2001:db8::/32"]}


def test_state_moves_only_on_approval_and_keeps_its_history(engine):
    settings = make_settings(RegistryWatch("east", ("eastus2",)), RegistryWatch("west", ("westus",)))
    import_made(engine, settings, "20250101", week())
    with engine.connect() as conn:
        assert state.all_current(conn) == []
        with pytest.raises(NotFoundError, match="watch 'east' \\(public\\) has no approved state"):
            state.require(conn, "public", "east")
    for baseline in (1, 2):
        review.transition(engine, baseline, "approve", "alice", now=lambda: utc(2025, 1, 2))
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.3.0/24", "10.1.9.0/24")), 2)
    with engine.connect() as conn:
        first = state.current(conn, "public", "east")
    review.transition(engine, 3, "approve", "bob", now=lambda: utc(2025, 1, 20))
    with engine.connect() as conn:
        history = state.history(conn, "public", "east")
        assert [s.ticket_id for s in history] == [1, 3]
        assert state.current(conn, "public", "east", at=utc(2025, 1, 19)).id == first.id
        assert state.current(conn, "public", "east", at=utc(2025, 1, 1)) is None
        assert [(s.cloud, s.watch) for s in state.all_current(conn)] == [("public", "east"), ("public", "west")]
        latest = state.current(conn, "public", "east")
    assert latest.tags["Storage.EastUS2"].publication == {"date": "2025-01-08", "change_number": 2}
    assert latest.tags["AzureContainerRegistry.EastUS2"].prefixes == ("10.3.0.0/24",)
    assert latest.before == first.final and latest.removals_at == utc(2025, 1, 20)
    data = latest.to_json(utc(2025, 1, 21))
    assert data == {"watch": "east", "cloud": "public", "ticket": 3,
                    "publication": {"date": "2025-01-08", "change_number": 2},
                    "effective": {"v4": ["10.1.0.0/22", "10.1.9.0/24", "10.3.0.0/24"], "v6": []},
                    "final": {"v4": ["10.1.0.0/22", "10.1.9.0/24", "10.3.0.0/24"], "v6": []},
                    "removals_at": "2025-01-20T00:00:00+00:00"}


def _snapshot(conn) -> list[dict]:
    """Every stored state as plain values: what reads of it give, whatever the columns hold."""
    found = []
    for watch in ("east", "west"):
        for s in state.history(conn, "public", watch):
            found.append({**s.to_json(utc(2025, 1, 10)), "tags": {n: t.to_json() for n, t in s.tags.items()},
                          "before": dict(s.before), "during": s.first_phase(), "id": s.id})
    return found


def _snippets(conn, settings) -> dict:
    ticket = tickets.get_ticket(conn, 3)
    return {phase: render.render_formats(conn, settings, ticket, render.RULE_FORMATS, phase)
            for phase in ("add", "remove")}


def test_migration_0012_moves_the_lists_into_packed_columns_and_back_with_data(engine):
    settings = make_settings(RegistryWatch("east", ("eastus2",)), RegistryWatch("west", ("westus",)))
    import_made(engine, settings, "20250101", week())
    for baseline in (1, 2):
        review.transition(engine, baseline, "approve", "alice", now=lambda: utc(2025, 1, 2))
    many = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(1, 1200, 3))  # long enough to be compressed
    import_made(engine, settings, "20250108", week(storage_eastus2=many), 2)
    review.transition(engine, 3, "release", "carol", "expected growth", now=lambda: utc(2025, 1, 9))  # held: it grew
    review.transition(engine, 3, "approve", "bob", now=lambda: utc(2025, 1, 9))
    with engine.connect() as conn:
        expected = _snapshot(conn)
        packed = conn.execute(sa.text("SELECT lists, tags FROM approved_states ORDER BY id DESC")).first()
        made = [(t.context, t.target_lists) for t in tickets.list_tickets(conn)]
        snippets = _snippets(conn, settings)
        assert state.current(conn, "public", "east").dropped["remove"]["v4"]  # the old storage prefixes go
        events = conn.execute(sa.text("SELECT count(*) FROM ticket_events")).scalar_one()
    assert "target" not in made[2][0] and len(made[2][1]["Storage.EastUS2"]["prefixes"]) == len(many)
    assert len(expected) == 3 and len(expected[1]["tags"]["Storage.EastUS2"]["prefixes"]) == len(many)
    assert bytes(packed.tags)[:4] == sql.ZSTD_MAGIC and bytes(packed.lists)[:4] == sql.ZSTD_MAGIC
    db.downgrade(engine, "0011")
    with engine.connect() as conn:
        assert {"lists", "tags"}.isdisjoint(c["name"] for c in sa.inspect(conn).get_columns("approved_states"))
        contents = [json.loads(c) for c in conn.execute(sa.text("SELECT content FROM approved_states ORDER BY id"))
                    .scalars()]
    # The old schema's one JSON value holds everything again.
    assert [sorted(c) for c in contents] == [["before", "during", "final", "publication", "tags"]] * 3
    assert [c["tags"] == e["tags"] for c, e in zip(contents, sorted(expected, key=lambda e: e["id"]))] == [True] * 3
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT context FROM tickets ORDER BY id")).scalars()
        old_contexts = [json.loads(c) for c in rows]
        assert conn.execute(sa.text("SELECT count(*) FROM ticket_events")).scalar_one() == events
    assert [c["target"] for c in old_contexts] == [t for _, t in made]
    db.upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
        assert _snapshot(conn) == expected
        assert [(t.context, t.target_lists) for t in tickets.list_tickets(conn)] == made
        # What a state recorded before 0012 lacks (the dropped lists made at approval) is computed as it was.
        assert state.current(conn, "public", "east").dropped is None and _snippets(conn, settings) == snippets
        assert conn.execute(sa.text("SELECT count(*) FROM ticket_events")).scalar_one() == events
        assert json.loads(conn.execute(sa.text("SELECT content FROM approved_states WHERE id = 1")).scalar_one()) \
            == {"publication": {"change_number": 1, "date": "2025-01-01"}}

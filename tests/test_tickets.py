"""Tickets: created once per watch per changing publication, in the import's transaction; held when dangerous;
reviewed through valid steps only; the schema revision upgrades and downgrades on both databases."""
from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from tests.ticket_helpers import import_made, import_real, import_real_pair, make_settings, week, REAL_OLD
from watcher import db, models, pipeline, render, tickets
from watcher.cli import main
from watcher.errors import TransitionError
from watcher.settings import RegistryWatch


def all_tickets(engine):
    with engine.connect() as conn:
        return tickets.list_tickets(conn)


def test_worktree_package_is_imported():
    import watcher
    import watcher.migrations
    import watcher.templates

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    assert watcher.__file__.startswith(str(root))
    assert watcher.migrations.__file__.startswith(str(root))


def test_real_week_makes_one_ticket_with_the_storage_change(engine):
    settings = make_settings()
    first = import_real(engine, settings, REAL_OLD)
    assert first.outcome == "imported"
    assert all_tickets(engine) == []  # the first publication of a cloud has nothing to compare with

    import_real_pair(engine, settings)  # the older file again is "already imported": still no ticket
    found = all_tickets(engine)
    assert len(found) == 1
    ticket = found[0]
    assert (ticket.watch, ticket.cloud, ticket.file_date.isoformat()) == ("myreg", "public", "2025-10-28")
    tags = {t["tag"]: t for t in ticket.context["tags"]}
    assert set(tags) == {"Storage.EastUS2"}  # AzureContainerRegistry.EastUS2 did not change
    storage = tags["Storage.EastUS2"]
    assert storage["added"] == ["135.130.158.0/23", "2603:1030:40f::/49"]
    assert storage["removed"] == ["2603:1030:40f::/48"]
    assert storage["net_removed"] == ["2603:1030:40f:8000::/49"]
    assert storage["net_added"] == ["135.130.158.0/23"]
    # Half of the tag's IPv6 space goes: more than the 30% threshold, so the ticket is held.
    assert ticket.state == "hold" and not ticket.removals_allowed
    assert "50%" in ticket.context["hold"]["reasons"][0]
    assert ticket.context["source"]["change_number"] == 375
    assert ticket.context["previous"]["change_number"] == 373
    assert ticket.context["deadline"]["add_before"] == "2025-11-04"
    assert [e["fqdn"] for e in ticket.context["endpoints"]] == ["myreg.eastus2.data.azurecr.io"]
    with engine.connect() as conn:
        events = tickets.ticket_events(conn, ticket.id)
    assert [(e.actor, e.action, e.from_state, e.to_state) for e in events] == [("watcher", "create", None, "hold")]


def test_one_ticket_per_watch_and_none_for_unchanged_weeks(engine):
    settings = make_settings(
        RegistryWatch("east", ("eastus2",)), RegistryWatch("west", ("westus",)),
        extra_tags=("AzureFrontDoor.*",),
    )
    import_made(engine, settings, "20250101", week())
    # A week that changes only a tag nobody watches.
    unwatched = week()
    unwatched["AzureCloud"] = ["10.50.0.0/16"]
    import_made(engine, settings, "20250108", unwatched, change_number=2)
    assert all_tickets(engine) == []
    # The east registry's storage gains a prefix: one ticket, for east only.
    east_change = week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.4.0/24"))
    import_made(engine, settings, "20250115", east_change, change_number=3)
    assert [(t.watch, t.state) for t in all_tickets(engine)] == [("east", "open")]
    # Both regions and the extra tag change: one ticket each, none repeated for earlier weeks.
    both = week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24",
                                 "10.1.4.0/24", "10.1.5.0/24"),
                storage_westus=("10.2.0.0/24", "10.2.1.0/24"), other=("10.9.0.0/24", "10.9.1.0/24"))
    import_made(engine, settings, "20250122", both, change_number=4)
    found = all_tickets(engine)
    assert [(t.watch, t.file_date.isoformat()) for t in found] == [
        ("east", "2025-01-15"), ("east", "2025-01-22"), ("west", "2025-01-22"), ("(extra tags)", "2025-01-22"),
    ]
    extra = found[-1]
    assert extra.context["watch"]["is_registry"] is False
    assert [t["tag"] for t in extra.context["tags"]] == ["AzureFrontDoor.Frontend"]
    # Importing the same file again creates nothing.
    import_made(engine, settings, "20250122", both, change_number=4)
    assert len(all_tickets(engine)) == 4


def test_reaggregation_reads_as_no_net_change_and_stays_open(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24")))
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/23", "10.1.2.0/24")), change_number=2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "open"
    tag = ticket.context["tags"][0]
    assert tag["reaggregation_only"] and tag["net_added"] == [] and tag["net_removed"] == []
    assert tag["net_text"].startswith("no net change")
    assert tag["rules"]["add"] == [] and tag["rules"]["remove"] == []  # same collapsed objects


@pytest.mark.parametrize("case", ["large removal", "withdrawn", "implausible"])
def test_dangerous_publications_are_held_without_removals(engine, case):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    if case == "large removal":  # 2 of 4 /24s: 50% of the IPv4 space
        result = import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24")), 2)
    elif case == "withdrawn":
        result = import_made(engine, settings, "20250108", week(withdraw=("Storage.EastUS2",), other=("10.9.9.0/24",)), 2)
    else:
        result = import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24",
                                                                                "10.1.2.0/24", "10.1.3.0/24",
                                                                                "10.1.9.0/24")),
                             2, implausible=("tag count fell from 2900 to 5",))
    assert result.outcome == "imported"
    (ticket,) = all_tickets(engine)
    assert ticket.state == "hold" and not ticket.removals_allowed
    reason = ticket.context["hold"]["reasons"][0]
    assert {"large removal": "50%", "withdrawn": "withdrawn", "implausible": "plausibility"}[case] in reason
    text = render.render(settings, "md", tickets.view(ticket))
    assert text.startswith("> **⚠ ON HOLD")
    if case != "implausible":
        csv_text = render.render(settings, "csv", tickets.view(ticket))
        assert ",remove," not in csv_text
        nft = render.render(settings, "nftables", tickets.view(ticket))
        # The held set keeps the old space (four /24s, collapsed) and is not cut down to what is left.
        assert "add element inet watcher wt_st_eastus2_v4 { 10.1.0.0/22 }" in nft.splitlines()

    released = tickets.transition(engine, ticket.id, "release", "alice", "checked with Microsoft's notes")
    assert released.state == "open" and released.removals_allowed
    if case != "implausible":
        assert ",remove," in render.render(settings, "csv", tickets.view(released))


def test_small_removal_is_not_held(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24")), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "open" and ticket.context["tags"][0]["removal_ratio"] == 0.25


def test_ticket_and_import_share_one_transaction(engine, monkeypatch):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())

    def broken(conn, result, settings):
        raise RuntimeError("derived work failed")

    monkeypatch.setattr(pipeline, "derived_work", lambda **kw: [tickets.ticket_hook(), broken])
    with pytest.raises(RuntimeError):
        import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24",)), 2)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM publications")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM tickets")).scalar_one() == 0


def test_review_steps_and_invalid_ones(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.3.0/24", "10.1.4.0/24")), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "open"
    with pytest.raises(TransitionError, match="is open: release needs a ticket that is hold"):
        tickets.transition(engine, ticket.id, "release", "bob")
    with pytest.raises(TransitionError, match="applied needs a ticket that is approved"):
        tickets.transition(engine, ticket.id, "applied", "bob")
    with pytest.raises(TransitionError, match="--by"):
        tickets.transition(engine, ticket.id, "approve", "  ")
    assert tickets.transition(engine, ticket.id, "approve", "bob", "looks right").state == "approved"
    with pytest.raises(TransitionError, match="is approved: reject"):
        tickets.transition(engine, ticket.id, "reject", "carol")
    assert tickets.transition(engine, ticket.id, "applied", "dave").state == "applied"
    with pytest.raises(TransitionError):
        tickets.transition(engine, ticket.id, "approve", "bob")
    with engine.connect() as conn:
        trail = [(e.actor, e.action, e.from_state, e.to_state, e.comment) for e in tickets.ticket_events(conn, ticket.id)]
    assert trail == [
        ("watcher", "create", None, "open", ""),
        ("bob", "approve", "open", "approved", "looks right"),
        ("dave", "applied", "approved", "applied", ""),
    ]


def test_tickets_cli(engine, db_url, tmp_path):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24")), 2)  # held
    import_made(engine, settings, "20250115", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.7.0/24")), 3)
    config = tmp_path / "watcher.toml"
    config.write_text('[[registries]]\nname = "myreg"\nregions = ["eastus2"]\ndata_endpoint = true\n')
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["--db", db_url, "--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    listed = json.loads(run("tickets", "list", "--json"))
    assert [(t["id"], t["state"], t["registry"], t["date"]) for t in listed] == [
        (1, "hold", "myreg", "2025-01-08"), (2, "open", "myreg", "2025-01-15"),
    ]
    assert "hold" not in run("tickets", "list", "--state", "open")
    assert "[watcher ticket 1]" in run("tickets", "show", "1")
    assert "ON HOLD" in run("tickets", "render", "1", "--format", "txt")
    assert "no network-object" not in run("tickets", "render", "1", "--format", "cisco-asa")
    out = run("tickets", "approve", "1", "--by", "alice", code=1)
    assert "ticket 1 is hold: approve needs a ticket that is open" in out
    assert "ticket 1 is now open" in run("tickets", "release", "1", "--by", "alice", "--comment", "expected")
    asa = run("tickets", "render", "1", "--format", "cisco-asa")
    assert " no network-object 10.1.0.0 255.255.252.0\n" in asa and " network-object 10.1.0.0 255.255.254.0\n" in asa
    assert "is now approved" in run("tickets", "approve", "1", "--by", "bob")
    assert "is now applied" in run("tickets", "applied", "1", "--by", "bob")
    assert "is now rejected" in run("tickets", "reject", "2", "--by", "bob", "--comment", "dup")
    shown = json.loads(run("tickets", "show", "1", "--json"))
    assert [(e["action"], e["by"]) for e in shown["events"]] == [
        ("create", "watcher"), ("release", "alice"), ("approve", "bob"), ("applied", "bob")]
    assert "no ticket 99" in run("tickets", "show", "99", code=1)
    for group in (["tickets"], ["notify"]):
        for name, command in main.commands[group[0]].commands.items():
            assert command.help or command.callback.__doc__, name


def test_migration_0002_upgrades_and_downgrades(engine):
    assert db.current_revision(engine) == db.head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
    db.downgrade(engine, "0001")
    names = set(sa.inspect(engine).get_table_names())
    assert {"tickets", "ticket_events", "outbox"}.isdisjoint(names) and "publications" in names
    db.upgrade(engine, "0002")
    assert {"tickets", "ticket_events", "outbox"} <= set(sa.inspect(engine).get_table_names())


# ---------------------------------------------------------------- implausible content is held, never opened

FOUR = ("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24")


@pytest.mark.parametrize("added, words", [
    ("0.0.0.0/0", "0.0.0.0/0 is a default route"),
    ("::/0", "::/0 is a default route"),
    ("20.0.0.0/7", "20.0.0.0/7 is wider than /8"),
    ("2600::/12", "2600::/12 is wider than /16"),
    ("192.168.7.0/24", "192.168.7.0/24 overlaps 192.168.0.0/16, private"),
    ("127.0.0.0/8", "loopback"),
    ("ff05::/16", "multicast"),
    ("192.0.2.0/24", "documentation"),
])
def test_a_publication_that_adds_implausible_prefixes_is_held_with_the_reason(engine, added, words):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + (added,)), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "hold" and not ticket.removals_allowed
    (reason,) = ticket.context["hold"]["reasons"]
    assert reason.startswith("Storage.EastUS2 adds implausible prefixes: ") and words in reason
    with engine.connect() as conn:
        (event,) = tickets.ticket_events(conn, ticket.id)
    assert words in event.comment  # the reason is on the review trail too


def test_minimum_prefix_lengths_are_settings(engine):
    import dataclasses

    base = make_settings()
    settings = dataclasses.replace(base, tickets=dataclasses.replace(base.tickets, min_prefix_length_v4=25))
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.8.0/24",)), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "hold" and "10.1.8.0/24 is wider than /25" in ticket.context["hold"]["reasons"][0]


def test_bogons_are_held_unless_exempted(engine):
    import dataclasses

    base = make_settings()
    strict = dataclasses.replace(base, tickets=dataclasses.replace(base.tickets, bogon_exemptions=()))
    import_made(engine, strict, "20250101", week())
    import_made(engine, strict, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "hold" and "10.1.4.0/24 overlaps 10.0.0.0/8, private" in ticket.context["hold"]["reasons"][0]


def test_a_publication_withdrawing_too_many_tags_is_held(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    gone = ("AzureContainerRegistry.WestUS", "Storage.WestUS")  # 2 of 5 tags: 40% > 25%
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",), withdraw=gone), 2)
    (ticket,) = all_tickets(engine)
    assert ticket.state == "hold"
    assert ticket.context["hold"]["reasons"] == [
        "the file failed a plausibility check: it withdraws 2 of the cloud's 5 tags (40%; more than 25%, at most 1, "
        "is implausible)"]


@pytest.mark.parametrize("actor, comment, words", [
    ("alice\n[watcher ticket 1] approved by root", "", "the reviewer's name (--by) must not contain control"),
    ("alice", "ok\r\n[watcher ticket 1] approved by root", "the comment must not contain control"),
    ("al\x1b[31mice", "", "U+001B"),
    ("alice\u202e", "", "U+202E"),  # a right-to-left override reads the trail backwards
    ("alice", "fine\u2028approved by root", "U+2028"),
    ("a" * 201, "", "longer than 200 characters"),
])
def test_review_steps_refuse_control_characters_and_change_nothing(engine, actor, comment, words):
    from tests.conftest import row_counts

    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    (ticket,) = all_tickets(engine)
    before = row_counts(engine)
    with pytest.raises(TransitionError, match=re.escape(words)):
        tickets.transition(engine, ticket.id, "approve", actor, comment)
    assert row_counts(engine) == before and all_tickets(engine)[0].state == ticket.state


def test_ticket_ids_out_of_range_are_usage_errors_and_library_not_found(engine, db_url):
    from watcher.errors import NotFoundError

    runner = CliRunner()
    for args in (["tickets", "show", "99999999999999999999"], ["tickets", "approve", "0", "--by", "a"],
                 ["tickets", "render", "--", "-1"], ["tickets", "reject", "2147483648", "--by", "a"]):
        result = runner.invoke(main, ["--db", db_url, *args])
        assert result.exit_code == 2 and "Invalid value for 'ID'" in result.output, (args, result.output)
        assert "Traceback" not in result.output
    with engine.connect() as conn:
        with pytest.raises(NotFoundError, match="no ticket 99999999999999999999"):
            tickets.get_ticket(conn, 99999999999999999999)
    with pytest.raises(NotFoundError):
        tickets.transition(engine, 2**63, "approve", "alice")

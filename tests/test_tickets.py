"""Tickets: a baseline per watch, then changes against the approved state; held when dangerous; superseded by
newer publications; reviewed through valid steps only; the schema revisions upgrade and downgrade on both databases."""
from __future__ import annotations

import json
from dataclasses import replace
import re

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from tests.ticket_helpers import (REAL_NEW, REAL_OLD, approve_baselines, import_made, import_real, make_settings,
                                  utc, week)
from watcher import db, models, pipeline, render, review, state, tickets
from watcher.cli import main
from watcher.errors import RenderError, TransitionError
from watcher.settings import McrSettings, RegistryWatch, TicketSettings

FOUR = ("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24")


def all_tickets(engine, state_name=None):
    with engine.connect() as conn:
        return tickets.list_tickets(conn, state_name)


def current(engine, watch="myreg"):
    with engine.connect() as conn:
        return state.current(conn, "public", watch)


def test_worktree_package_is_imported():
    import watcher
    import watcher.migrations
    import watcher.templates

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    assert watcher.__file__.startswith(str(root))
    assert watcher.migrations.__file__.startswith(str(root))


def test_real_files_baseline_then_the_storage_change_against_the_approved_state(engine):
    settings = make_settings()
    import_real(engine, settings, REAL_OLD)
    (baseline,) = all_tickets(engine)
    assert (baseline.kind, baseline.state, baseline.previous_publication_id) == ("baseline", "open", None)
    assert set(baseline.target) == {"AzureContainerRegistry.EastUS2", "Storage.EastUS2"}
    assert current(engine) is None
    review.transition(engine, baseline.id, "approve", "alice")
    approved = current(engine)
    assert approved.ticket_id == baseline.id and approved.publication["change_number"] == 373

    import_real(engine, settings, REAL_NEW)
    (ticket,) = all_tickets(engine, "hold")
    assert (ticket.kind, ticket.watch, ticket.file_date.isoformat()) == ("change", "myreg", "2025-10-28")
    assert ticket.changes == {"Storage.EastUS2": {"added": ["135.130.158.0/23", "2603:1030:40f::/49"],
                                                  "removed": ["2603:1030:40f::/48"]}}
    storage = ticket.context["tags"][0]
    assert storage["net_removed"] == ["2603:1030:40f:8000::/49"] and storage["net_added"] == ["135.130.158.0/23"]
    # The hold reason is per family: IPv6 lost half its space while IPv4 grew.
    (reason,) = ticket.context["hold"]["reasons"]
    assert reason.startswith("Storage.EastUS2: IPv6: /48 narrowed to /49, 50% of IPv6 space removed; "
                             "IPv4: +512 IPv4 addresses"), reason
    assert ticket.context["previous"]["change_number"] == 373 and ticket.context["source"]["change_number"] == 375
    assert ticket.context["deadline"]["remove_after"] == "2025-11-04"
    assert any("opens every storage account" in w for w in ticket.context["warnings"])


def test_one_ticket_per_watch_and_none_for_unchanged_weeks(engine):
    settings = make_settings(
        RegistryWatch("east", ("eastus2",)), RegistryWatch("west", ("westus",)),
        extra_tags=("AzureFrontDoor.*",),
    )
    import_made(engine, settings, "20250101", week())
    assert [(t.watch, t.kind) for t in all_tickets(engine)] == [
        ("east", "baseline"), ("west", "baseline"), ("(extra tags)", "baseline")]
    approve_baselines(engine)
    unwatched = week()
    unwatched["AzureCloud"] = ["10.50.0.0/16"]
    import_made(engine, settings, "20250108", unwatched, change_number=2)
    assert len(all_tickets(engine)) == 3
    east_change = week(storage_eastus2=FOUR + ("10.1.4.0/24",))
    import_made(engine, settings, "20250115", east_change, change_number=3)
    assert [(t.watch, t.state) for t in all_tickets(engine, "open")] == [("east", "open")]
    # Approve east; then both regions and the extra tag change: one ticket each.
    review.transition(engine, 4, "approve", "bob")
    both = week(storage_eastus2=FOUR + ("10.1.4.0/24", "10.1.5.0/24"), storage_westus=("10.2.0.0/24", "10.2.1.0/24"),
                other=("10.9.0.0/24", "10.9.1.0/24"))
    import_made(engine, settings, "20250122", both, change_number=4)
    found = all_tickets(engine, "open")
    assert [(t.watch, t.file_date.isoformat()) for t in found] == [
        ("east", "2025-01-22"), ("west", "2025-01-22"), ("(extra tags)", "2025-01-22")]
    assert found[0].changes == {"Storage.EastUS2": {"added": ["10.1.5.0/24"], "removed": []}}
    assert found[-1].context["watch"]["is_registry"] is False
    import_made(engine, settings, "20250122", both, change_number=4)  # the same file again: nothing new
    assert len(all_tickets(engine)) == 7


def test_newer_publication_supersedes_the_live_ticket_and_carries_the_whole_change(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    import_made(engine, settings, "20250115", week(storage_eastus2=FOUR + ("10.1.4.0/24", "10.1.5.0/24")), 3)
    first, second, third = all_tickets(engine)
    assert (second.state, second.superseded_by) == ("superseded", third.id)
    assert third.state == "open" and len(all_tickets(engine, "open")) == 1  # at most one live ticket per watch
    assert third.changes["Storage.EastUS2"]["added"] == ["10.1.4.0/24", "10.1.5.0/24"]
    with pytest.raises(TransitionError, match=f"superseded by ticket {third.id}"):
        review.transition(engine, second.id, "approve", "bob")
    with engine.connect() as conn:
        with pytest.raises(RenderError, match="superseded: nothing to apply"):
            render.render_ticket(conn, settings, second, "nftables")
        text = render.render_ticket(conn, settings, tickets.get_ticket(conn, second.id), "md")
        assert text.startswith(f"> **Superseded by ticket {third.id}: nothing to do")
        events = tickets.ticket_events(conn, second.id)
    assert [(e.actor, e.action, e.to_state) for e in events][-1] == ("watcher", "supersede", "superseded")
    # A publication back at the approved list makes the live ticket moot.
    import_made(engine, settings, "20250122", week(), 4)
    assert all_tickets(engine, "open") == [] and len(all_tickets(engine)) == 3


def test_rejected_change_leaves_the_state_and_comes_back_with_the_next_change(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    before = current(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    (rejected,) = all_tickets(engine, "open")
    review.transition(engine, rejected.id, "reject", "carol", "not now")
    assert current(engine).id == before.id
    import_made(engine, settings, "20250115", week(storage_eastus2=FOUR + ("10.1.4.0/24",), acr_eastus2=("10.3.0.0/23",)), 3)
    (again,) = all_tickets(engine, "open")
    assert again.changes == {"AzureContainerRegistry.EastUS2": {"added": ["10.3.0.0/23"], "removed": ["10.3.0.0/24"]},
                             "Storage.EastUS2": {"added": ["10.1.4.0/24"], "removed": []}}
    with engine.connect() as conn:
        assert "REJECTED: nothing to apply" in render.render_ticket(conn, settings, tickets.get_ticket(conn, rejected.id),
                                                                    "summary")


def test_two_phases_removal_date_is_the_later_of_publication_plus_delay_and_approval(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.5.0/24")), 2)
    (ticket,) = all_tickets(engine, "open")
    review.transition(engine, ticket.id, "approve", "bob", now=lambda: utc(2025, 1, 9, 12))
    moved = current(engine)
    assert moved.removals_at == utc(2025, 1, 15)
    assert moved.effective(utc(2025, 1, 14, 23))["v4"] == ["10.1.0.0/22", "10.1.5.0/24", "10.3.0.0/24"]
    assert moved.effective(utc(2025, 1, 15))["v4"] == ["10.1.0.0/23", "10.1.2.0/24", "10.1.5.0/24", "10.3.0.0/24"]
    with engine.connect() as conn:
        add = render.render_ticket(conn, settings, tickets.get_ticket(conn, ticket.id), "json", "add")
        remove = render.render_ticket(conn, settings, tickets.get_ticket(conn, ticket.id), "json", "remove")
    assert json.loads(add)["objects"]["v4"] == moved.effective(utc(2025, 1, 10))["v4"]
    assert json.loads(remove)["objects"]["v4"] == moved.final["v4"]
    # Approved late: the removals wait for the approval, not for the publication date.
    import_made(engine, settings, "20250115", week(storage_eastus2=("10.1.0.0/24",)), 3)
    (late,) = all_tickets(engine, "hold")
    review.transition(engine, late.id, "release", "alice", now=lambda: utc(2025, 2, 1))
    review.transition(engine, late.id, "approve", "bob", now=lambda: utc(2025, 2, 2))
    assert current(engine).removals_at == utc(2025, 2, 1)  # the release decided it


@pytest.mark.parametrize("case", ["large removal", "withdrawn", "implausible"])
def test_dangerous_changes_are_held_and_their_additions_can_be_approved_alone(engine, case):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    if case == "large removal":  # 2 of 4 /24s: 50% of the IPv4 space
        import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.8.0/24")), 2)
    elif case == "withdrawn":
        import_made(engine, settings, "20250108", week(withdraw=("Storage.EastUS2",), acr_eastus2=("10.3.0.0/24", "10.1.8.0/24")), 2)
    else:
        import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.8.0/24",)), 2,
                    implausible=("tag count fell from 2900 to 5",))
    (ticket,) = all_tickets(engine)[1:]
    assert ticket.state == "hold" and not ticket.removals_allowed
    reason = ticket.context["hold"]["reasons"][0]
    assert {"large removal": "50% of IPv4 space", "withdrawn": "withdrawn", "implausible": "plausibility"}[case] in reason
    with engine.connect() as conn:
        text = render.render_ticket(conn, settings, ticket, "md")
        overdue, rest = text.split("\n\n", 1)  # born long after its add-before date: that comes first
        assert overdue.startswith("> **⏰ OVERDUE") and rest.startswith("> **⚠ ON HOLD"), text[:300]
        with pytest.raises(RenderError, match="held: its removals wait"):
            render.render_ticket(conn, settings, ticket, "nftables", "remove")
        held_add = render.render_ticket(conn, settings, ticket, "nftables", "add")
    assert "  10.1.0.0/22,\n" in held_add and "  10.1.8.0/24,\n" in held_add  # old and new space
    with pytest.raises(TransitionError, match="is hold: approve needs a ticket that is open"):
        review.transition(engine, ticket.id, "approve", "bob")
    review.transition(engine, ticket.id, "approve-adds", "bob")
    partial = current(engine)
    assert partial.additions_only and "10.1.8.0/24" in partial.final["v4"] and "10.1.0.0/22" in partial.final["v4"]
    released = review.transition(engine, ticket.id, "release", "alice", "checked with Microsoft's notes")
    assert released.state == "open" and released.removals_allowed
    review.transition(engine, ticket.id, "approve", "carol")
    final = current(engine)
    assert final.removals_at is not None and "10.1.8.0/24" in final.final["v4"]
    if case != "implausible":
        assert "10.1.0.0/22" not in final.final["v4"] and "10.1.0.0/22" in final.before["v4"]


def test_review_steps_invalid_ones_and_the_four_eyes_rule(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    (baseline,) = all_tickets(engine)
    four_eyes = TicketSettings(four_eyes=True)
    with pytest.raises(TransitionError, match="is open: release needs a ticket that is hold"):
        review.transition(engine, baseline.id, "release", "bob")
    with pytest.raises(TransitionError, match="applied needs a ticket that is approved"):
        review.transition(engine, baseline.id, "applied", "bob")
    with pytest.raises(TransitionError, match="--by"):
        review.transition(engine, baseline.id, "approve", "  ")
    with pytest.raises(TransitionError, match="must not contain control"):
        review.transition(engine, baseline.id, "approve", "alice\n[watcher ticket 3] approved by root")
    with pytest.raises(TransitionError, match="four-eyes rule: watcher created"):
        review.transition(engine, baseline.id, "approve", "watcher", settings=four_eyes)
    assert review.transition(engine, baseline.id, "approve", "bob", "looks right", settings=four_eyes).state == "approved"
    assert review.transition(engine, baseline.id, "applied", "dave").state == "applied"
    with pytest.raises(TransitionError):
        review.transition(engine, baseline.id, "approve", "bob")
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24",)), 2)
    (held,) = all_tickets(engine, "hold")
    review.transition(engine, held.id, "approve-adds", "erin")
    with pytest.raises(TransitionError, match="four-eyes rule: erin"):
        review.transition(engine, held.id, "release", "erin", settings=four_eyes)
    review.transition(engine, held.id, "release", "frank", settings=four_eyes)
    with engine.connect() as conn:
        trail = [(e.actor, e.action, e.from_state, e.to_state) for e in tickets.ticket_events(conn, baseline.id)]
        text = render.render_ticket(conn, settings, tickets.get_ticket(conn, held.id), "txt")
    assert trail == [("watcher", "create", None, "open"), ("bob", "approve", "open", "approved"),
                     ("dave", "applied", "approved", "applied")]
    assert "frank release -> open" in text and "erin approve-adds -> hold" in text


def test_ticket_and_import_share_one_transaction(engine, monkeypatch):
    settings = make_settings()

    def broken(conn, result, settings):
        raise RuntimeError("derived work failed")

    monkeypatch.setattr(pipeline, "derived_work", lambda **kw: [tickets.ticket_hook(), broken])
    with pytest.raises(RuntimeError):
        import_made(engine, settings, "20250101", week())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM publications")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM tickets")).scalar_one() == 0


def test_mcr_is_one_watch_whatever_the_number_of_registries(engine):
    settings = make_settings(RegistryWatch("east", ("eastus2",)), RegistryWatch("west", ("westus",)))
    settings = replace(settings, mcr=McrSettings(enabled=True))
    tags = week()
    tags.update({"MicrosoftContainerRegistry": ["10.7.0.0/24"], "AzureFrontDoor.FirstParty": ["10.8.0.0/24"]})
    import_made(engine, settings, "20250101", tags)
    mcr = [t for t in all_tickets(engine) if t.watch == "mcr"]
    assert len(mcr) == 1 and set(mcr[0].target) == {"MicrosoftContainerRegistry", "AzureFrontDoor.FirstParty"}
    assert sorted({e["fqdn"] for e in mcr[0].context["endpoints"]}) == ["*.data.mcr.microsoft.com", "mcr.microsoft.com"]


def test_tickets_and_state_cli(engine, db_url, tmp_path, monkeypatch):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    config = tmp_path / "watcher.toml"
    config.write_text('[[registries]]\nname = "myreg"\nregions = ["eastus2"]\ndata_endpoint = true\n')
    runner = CliRunner()
    monkeypatch.setenv("USER", "osuser")
    monkeypatch.setenv("LOGNAME", "osuser")

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["--db", db_url, "--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    out = run("state", "show", "myreg", "--json", code=1)
    assert "watch 'myreg' (public) has no approved state" in out
    assert "is now approved" in run("tickets", "approve", "1")  # --by: the operating-system user
    shown = json.loads(run("tickets", "show", "1", "--json"))
    assert shown["kind"] == "baseline" and shown["superseded_by"] is None
    assert shown["changes"]["Storage.EastUS2"] == {"added": list(FOUR), "removed": []}
    assert [(e["action"], e["by"]) for e in shown["events"]] == [("create", "watcher"), ("approve", "osuser")]
    data = json.loads(run("state", "show", "myreg", "--json"))
    assert list(data) == ["watch", "cloud", "ticket", "publication", "effective", "final", "removals_at"]
    assert data["effective"] == {"v4": ["10.1.0.0/22", "10.3.0.0/24"], "v6": []} == data["final"]
    assert data["publication"] == {"date": "2025-01-01", "change_number": 1}
    assert json.loads(run("state", "list", "--json")) == [data]
    assert "no approved state at" in run("state", "show", "myreg", "--at", "2000-01-01", code=1)
    assert "not an ISO date" in run("state", "show", "myreg", "--at", "yesterday", code=2)

    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24")), 2)  # held
    listed = json.loads(run("tickets", "list", "--json"))
    assert [(t["id"], t["state"], t["kind"], t["superseded_by"]) for t in listed] == [
        (1, "approved", "baseline", None), (2, "hold", "change", None)]
    assert "removals wait" in run("tickets", "render", "2", "--format", "cisco-asa", "--phase", "remove", code=1)
    assert "is still hold; its additions are approved" in run("tickets", "approve", "2", "--additions-only",
                                                               "--by", "bob")
    assert "--additions-only is for held tickets" in run("tickets", "approve", "1", "--additions-only", code=1)
    assert "ticket 2 is now open" in run("tickets", "release", "2", "--by", "alice", "--comment", "expected")
    assert "is now approved" in run("tickets", "approve", "2", "--by", "carol")
    asa = run("tickets", "render", "2", "--format", "cisco-asa", "--phase", "remove")
    # The group keeps the new /23 and drops the /22 the baseline put there.
    assert " no network-object 10.1.0.0 255.255.252.0\n" in asa and " network-object 10.1.0.0 255.255.254.0\n" in asa
    assert "ON HOLD" not in run("tickets", "render", "2", "--format", "txt")
    assert "no ticket 99" in run("tickets", "show", "99", code=1)
    for name, command in main.commands["tickets"].commands.items():
        assert command.help or command.callback.__doc__, name
    for name, command in main.commands["state"].commands.items():
        assert command.help or command.callback.__doc__, name


def test_migration_0007_upgrades_and_downgrades_with_tickets_of_the_new_kinds(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    import_made(engine, settings, "20250115", week(storage_eastus2=FOUR + ("10.1.5.0/24",)), 3)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
    db.downgrade(engine, "0006")
    with engine.connect() as conn:
        assert "approved_states" not in sa.inspect(conn).get_table_names()
        rows = conn.execute(sa.text("SELECT id, state FROM tickets ORDER BY id")).all()
    # The baseline has no previous publication, which the old schema requires; the superseded one reads as rejected.
    assert [tuple(r) for r in rows] == [(2, "rejected"), (3, "open")]
    db.upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
        kinds = conn.execute(sa.text("SELECT kind FROM tickets ORDER BY id")).scalars().all()
    assert kinds == ["change", "change"]


def test_an_older_approval_does_not_render_over_a_newer_one_and_empty_watches_get_no_baseline(engine):
    settings = make_settings(RegistryWatch("myreg", ("eastus2",)), RegistryWatch("nowhere", ("marsnorth",)))
    import_made(engine, settings, "20250101", week())
    assert [t.watch for t in all_tickets(engine)] == ["myreg"]  # no tag resolves for "nowhere": no empty baseline
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    review.transition(engine, 2, "approve", "bob")
    with engine.connect() as conn:
        with pytest.raises(RenderError, match="ticket 1's approval was followed by ticket 2's"):
            render.render_ticket(conn, settings, tickets.get_ticket(conn, 1), "nftables")
        assert "10.1.4.0/24" in render.render_ticket(conn, settings, tickets.get_ticket(conn, 2), "nftables")
        assert "[watcher ticket 1]" in render.render_ticket(conn, settings, tickets.get_ticket(conn, 1), "md")


# ---------------------------------------------------------------- implausible content is held, never opened

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
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + (added,)), 2)
    ticket = all_tickets(engine)[-1]
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
    import_made(engine, base, "20250101", week())  # the baseline is approved under the usual limits
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.8.0/24",)), 2)
    ticket = all_tickets(engine)[-1]
    assert ticket.state == "hold" and "10.1.8.0/24 is wider than /25" in ticket.context["hold"]["reasons"][0]


def test_bogons_are_held_unless_exempted(engine):
    import dataclasses

    base = make_settings()
    strict = dataclasses.replace(base, tickets=dataclasses.replace(base.tickets, bogon_exemptions=()))
    import_made(engine, base, "20250101", week())  # the baseline is approved under the usual limits
    approve_baselines(engine)
    import_made(engine, strict, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    ticket = all_tickets(engine)[-1]
    assert ticket.state == "hold" and "10.1.4.0/24 overlaps 10.0.0.0/8, private" in ticket.context["hold"]["reasons"][0]


def test_a_publication_withdrawing_too_many_tags_is_held(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    gone = ("AzureContainerRegistry.WestUS", "Storage.WestUS")  # 2 of 5 tags: 40% > 25%
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",), withdraw=gone), 2)
    ticket = all_tickets(engine)[-1]
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
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), 2)
    ticket = all_tickets(engine)[-1]
    before = row_counts(engine)
    with pytest.raises(TransitionError, match=re.escape(words)):
        review.transition(engine, ticket.id, "approve", actor, comment)
    assert row_counts(engine) == before and all_tickets(engine)[-1].state == ticket.state


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
        review.transition(engine, 2**63, "approve", "alice")


FORMATS = ("md", "html", "txt", "summary")


def _top_line(text: str) -> str:
    """The first line a reader sees (in HTML, the first one of the body)."""
    body = text.split("<body>", 1)[-1]
    return next(line for line in body.splitlines() if line.strip())


def test_a_ticket_created_after_its_add_before_date_says_overdue_at_the_top_of_every_format_and_the_subject(engine):
    from watcher import notify

    settings = make_settings()
    import_made(engine, settings, "20250101", week())  # created today, long after 2025-01-01 + 7 days
    (ticket,) = all_tickets(engine)
    assert ticket.context["deadline"]["add_before"] == "2025-01-08"
    assert ticket.context["overdue"].startswith("OVERDUE: the additions were due before 2025-01-08")
    renderer = render.Renderer(settings.tickets)
    data = tickets.view(ticket)
    for fmt in FORMATS:
        top = _top_line(renderer.render(fmt, data))
        assert "OVERDUE" in top and "2025-01-08" in top, (fmt, top)
    assert notify.build_message(renderer, ticket).title.startswith("[watcher ticket 1] [OVERDUE] myreg.azurecr.io")
    # The same ticket born on time says nothing of the kind, anywhere.
    on_time = replace(ticket, context={**ticket.context, "overdue": None})
    for fmt in FORMATS:
        assert "OVERDUE" not in renderer.render(fmt, tickets.view(on_time)), fmt
    assert "OVERDUE" not in notify.build_message(renderer, on_time).title
    # A superseded ticket asks for no work: late additions are not its business any more.
    superseded = replace(ticket, state="superseded", superseded_by=2)
    assert "OVERDUE" not in renderer.render("md", tickets.view(superseded))
    assert "OVERDUE" not in notify.build_message(renderer, superseded, event="superseded").title


def test_overdue_is_decided_by_the_creation_day_against_publication_plus_seven_days():
    import datetime as dt

    from watcher import ticket_text

    add_before = dt.date(2025, 1, 8)
    assert ticket_text.overdue_note(add_before, utc(2025, 1, 3)) is None
    assert ticket_text.overdue_note(add_before, utc(2025, 1, 8, 23, 59)) is None  # the due day itself is on time
    assert "1 day late" in ticket_text.overdue_note(add_before, utc(2025, 1, 9))
    assert "30 days late" in ticket_text.overdue_note(add_before, utc(2025, 2, 7))
    assert ticket_text.overdue_note(add_before, None) is None


def test_a_ticket_of_a_publication_after_missed_ones_says_so_in_its_source_section(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week(), change_number=7)
    approve_baselines(engine)
    import_made(engine, settings, "20250115", week(storage_eastus2=FOUR + ("10.1.4.0/24",)), change_number=10)
    baseline, change = all_tickets(engine)
    assert baseline.context["source"]["missed"] is None
    assert change.context["source"]["missed"] == {
        "count": 2, "after": "2025-01-01", "before": "2025-01-15",
        "text": "2 publication(s) not seen between 2025-01-01 and 2025-01-15"}
    renderer = render.Renderer(settings.tickets)
    for fmt in FORMATS:
        assert "2 publication(s) not seen between 2025-01-01 and 2025-01-15" in renderer.render(
            fmt, tickets.view(change)), fmt
        assert "not seen" not in renderer.render(fmt, tickets.view(baseline)), fmt
    # A ticket stored before the gap was recorded on tickets still renders.
    old_source = {k: v for k, v in change.context["source"].items() if k != "missed"}
    old = replace(change, context={**change.context, "source": old_source})
    assert "not seen" not in renderer.render("md", tickets.view(old))

"""What a ticket's message carries: which phase's snippets (none for no work to do), for which firewall kinds, and an
HTML body whose plain-text conversion (apprise's, as the mail plugin makes it) keeps each list item on one line."""
from __future__ import annotations

import datetime as dt

import pytest
from apprise.conversion.format import html_to_text

from watcher.mail import attachment_type, firewall_kinds, mail_html, snippet_phase
from watcher.settings import McrSettings, RegistryWatch, Settings
from watcher.tickets import TicketInfo


def ticket(state: str, watch: str = "contoso", cloud: str = "public") -> TicketInfo:
    at = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    return TicketInfo(7, "uid", 1, None, cloud, watch, dt.date(2025, 1, 1), state, state != "hold", {"title": "t"},
                      at, at)


@pytest.mark.parametrize("state, event, phase", [
    ("open", "created", "add"),            # a baseline or an open change: add now
    ("approved", "approved", "add"),
    ("approved", "created", "add"),        # approved before its first message went out
    ("applied", "approved", "add"),
    ("hold", "created", None),             # nothing approved yet
    ("hold", "additions", "add"),          # the additions alone are approved
    ("approved", "reminder", "remove"),    # the removal date has come
    ("hold", "reminder", None),
    ("rejected", "rejected", None),
    ("superseded", "superseded", None),
    ("rejected", "created", None),         # rejected before its first message went out
    ("open", "superseded", None),
])
def test_snippet_phase_follows_the_state(state, event, phase):
    assert snippet_phase(ticket(state), event) == phase


def test_firewall_kinds_come_from_the_watch_of_the_ticket():
    settings = Settings(registries=(RegistryWatch("contoso", ("eastus2",), firewalls=("nftables", "json")),
                                    RegistryWatch("contoso", ("chinaeast2",), cloud="china", firewalls=("csv",))),
                        mcr=McrSettings(enabled=True, firewalls=("paloalto",)))
    assert firewall_kinds(settings, ticket("open")) == ("nftables", "json")
    assert firewall_kinds(settings, ticket("open", cloud="china")) == ("csv",)
    assert firewall_kinds(settings, ticket("open", watch="mcr")) == ("paloalto",)
    assert firewall_kinds(settings, ticket("open", watch="fabrikam")) == ()  # not configured (any more)


def test_inline_code_no_longer_breaks_a_list_item_in_the_plain_text():
    html = ('<ul><li><code>10.1.4.0/24</code> in <code class="x">Storage.EastUS2</code></li>'
            '<li>Release with <CODE>watcher tickets release 7</CODE> once understood</li></ul>')
    assert "-\n10.1.4.0/24" in html_to_text(html).replace("- \n", "-\n")  # the defect, as apprise converts it
    shown = mail_html(html)
    assert html_to_text(shown).splitlines() == ["- 10.1.4.0/24 in Storage.EastUS2",
                                                "- Release with watcher tickets release 7 once understood"]
    assert "<code" not in shown.lower() and shown.count("<span") == 3 and shown.count("</span>") == 3
    assert 'class="x"' in shown  # the tag's attributes are kept


def test_escaped_text_that_looks_like_code_is_left_alone():
    html = "<p>&lt;code&gt;not a tag&lt;/code&gt;</p>"
    assert mail_html(html) == html


@pytest.mark.parametrize("name, mimetype", [
    ("watcher-ticket-7.md", "text/markdown"), ("watcher-ticket-7-json-add.json", "application/json"),
    ("watcher-ticket-7-csv-add.csv", "text/csv"), ("watcher-ticket-7-azure-nsg-add.sh", "text/plain"),
    ("watcher-ticket-7-nftables-add.nft", "text/plain"), ("watcher-ticket-7-terraform-remove.TF", "text/plain"),
    ("watcher-test.txt", "text/plain"), ("README", "text/plain"),
])
def test_every_attachment_is_sent_as_text_whatever_the_host_guesses(name, mimetype):
    assert attachment_type(name) == mimetype

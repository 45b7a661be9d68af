"""What a ticket's message carries besides its text: the full-state snippets of the watch's firewall kinds, and the
HTML body shaped so that the mail's plain-text part (built by apprise) keeps each list item on one line. Pure but for
the snippet rendering, which reads the ticket's view."""
from __future__ import annotations

import re

from sqlalchemy import Connection

from . import render, tickets
from .settings import Settings
from .watches import MCR_WATCH

#: How each snippet file is named, so a mail client opens it with a fitting program.
SNIPPET_EXTENSIONS = {"nftables": "nft", "iptables": "ipset", "azure-nsg": "sh", "paloalto": "txt",
                      "cisco-asa": "txt", "fortigate": "txt", "csv": "csv", "terraform": "tf", "json": "json"}


#: Attachment types by file ending; every other file is plain text. Fixed here, not guessed from the host's
#: mime.types, so a script (.sh) never arrives as something a mail gateway treats as executable.
_ATTACHMENT_TYPES = {".md": "text/markdown", ".json": "application/json", ".csv": "text/csv"}


def attachment_type(name: str) -> str:
    """The MIME type a message's file is sent with: text, so that a mail client shows it."""
    return _ATTACHMENT_TYPES.get(name[name.rfind("."):].lower() if "." in name else "", "text/plain")


def snippet_phase(ticket: tickets.TicketInfo, event: str) -> str | None:
    """Which phase's snippets a message carries: none for a ticket that is no work to do.

    Approved, applied and open (the baseline) tickets carry the add phase, a held one only once its additions are
    approved; the removal-date reminder carries the remove phase it asks for.
    """
    if event in ("rejected", "superseded") or ticket.state in ("rejected", "superseded"):
        return None
    if event == "reminder":
        return "remove" if ticket.state in ("approved", "applied") else None
    if ticket.state == "hold":
        return "add" if event == "additions" else None
    return "add"


def firewall_kinds(settings: Settings, ticket: tickets.TicketInfo) -> tuple[str, ...]:
    """The firewall kinds configured for the ticket's watch (a registry, or ``[mcr]``); none for the extra tags."""
    if ticket.watch == MCR_WATCH:
        return settings.mcr.firewalls
    for registry in settings.registries:
        if registry.name == ticket.watch and registry.cloud == ticket.cloud:
            return registry.firewalls
    return ()


def snippet_attachments(conn: Connection, settings: Settings, ticket: tickets.TicketInfo,
                        event: str) -> tuple[tuple[str, str], ...]:
    """The snippet files for a message about ``ticket``: exactly what ``tickets render ID --format F --phase P`` prints."""
    phase, kinds = snippet_kinds(settings, ticket, event)
    if not kinds:
        return ()
    return snippet_files(ticket, phase, render.render_formats(conn, settings, ticket, kinds, phase))


def snippet_kinds(settings: Settings, ticket: tickets.TicketInfo, event: str) -> tuple[str, tuple[str, ...]]:
    """(the phase, the firewall kinds) of the snippets a message about ``ticket`` carries; no kinds: none."""
    phase = snippet_phase(ticket, event)
    kinds = firewall_kinds(settings, ticket)
    if phase is None or not kinds:
        return "add", ()
    return phase, kinds


def snippet_files(ticket: tickets.TicketInfo, phase: str, texts: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The rendered snippets ``texts`` (by kind) as the message's named files."""
    return tuple((f"watcher-ticket-{ticket.id}-{kind}-{phase}.{SNIPPET_EXTENSIONS.get(kind, 'txt')}", text)
                 for kind, text in texts.items())


#: apprise's HTML-to-text converter (the plain-text part of a mail) starts a new line at every <code>.
_CODE_TAG = re.compile(r"<(/?)code\b([^>]*)>", re.IGNORECASE)


def mail_html(html: str) -> str:
    """``html`` with inline code as a monospace span, so the mail's plain-text part keeps each list item on one line.

    Apprise builds the plain-text alternative itself and treats ``<code>`` as a block: ``<li><code>10.0.0.0/24</code>``
    would become a bare bullet with the prefix on the next line. A span is inline there and looks the same in HTML.
    Templates escape their data, so every ``<code`` left in the text is a tag.
    """
    return _CODE_TAG.sub(lambda m: "</span>" if m.group(1) else
                         f'<span style="font-family: monospace; font-size: 95%"{m.group(2)}>', html)

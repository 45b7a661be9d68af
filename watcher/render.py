"""Render stage: Jinja2 templates turn a ticket's stored context into a ticket and rule snippets.

Built-in templates live in the package (``watcher.templates``); a user's
template folder (``[tickets] template_dir``) overrides them file by file. All
of them run in Jinja2's immutable sandbox with ``StrictUndefined``: a user
template cannot reach Python internals, cannot change the data it is given,
and a misspelt variable is an error, not an empty string. Output is capped
(``output_cap_bytes``) while it is generated, and every render runs under the
limits of ``watcher.sandbox`` (wall clock, loop steps, widths).

Escaping, for defence in depth (names and prefixes are also checked at parse
time): every ``{{ expression }}`` prints on one line in every format; rule
snippets print prefixes through ``cidr`` (a plain network or a RenderError),
shell words through ``shell``, HCL strings through ``hcl``; Markdown text
through ``md`` (HTML characters as entities, Markdown punctuation escaped);
HTML templates are autoescaped.

Rule snippets are full state (``watcher.review.firewall``): they set the whole
object contents of a watch for a phase, so applying one twice, or after any
earlier one, leaves exactly the approved list.

Broken templates are found by ``check_templates`` (rendering every format
against sample tickets) when the configuration is checked, not at send time.
"""
from __future__ import annotations


import csv
import functools
import datetime as dt
import hashlib
import html
import io
import ipaddress
import json
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
import markupsafe
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import diff as diffs
from . import state as states
from . import store, tickets
from .errors import RenderError
from .sandbox import RenderLimit, ACTIVE_LIMIT, BoundedSandbox, bounded_filters, counting_range, bounded_lipsum, line_tracer
from .settings import Settings, TicketSettings
from .watches import ResolvedWatch, WatchedTag

#: format name -> template path (relative to a template folder)
FORMATS: dict[str, str] = {
    "md": "ticket.md.j2",
    "html": "ticket.html.j2",
    "txt": "ticket.txt.j2",
    "summary": "summary.txt.j2",
    "nftables": "rules/nftables.j2",
    "iptables": "rules/iptables.j2",
    "azure-nsg": "rules/azure-nsg.j2",
    "paloalto": "rules/paloalto.j2",
    "cisco-asa": "rules/cisco-asa.j2",
    "fortigate": "rules/fortigate.j2",
    "csv": "rules/csv.j2",
    "terraform": "rules/terraform.j2",
    "json": "rules/json.j2",
}
TICKET_FORMATS = ("md", "html", "txt")
RULE_FORMATS = ("nftables", "iptables", "azure-nsg", "paloalto", "cisco-asa", "fortigate", "csv", "terraform", "json")


class _PackageLoader(jinja2.BaseLoader):
    """Templates from an importlib.resources folder (works from wheels and editable installs alike)."""

    def __init__(self, root: Traversable):
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        parts = template.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise jinja2.TemplateNotFound(template)
        path = self.root.joinpath(*parts)
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), None, lambda: True


class _UserFirstLoader(jinja2.BaseLoader):
    """The user's folder, then the built-ins; a built-in stays cached only while no user file overrides it.

    Environments are shared for the life of the process, so a template the
    user adds or edits while the daemon runs must invalidate what was cached.
    """

    def __init__(self, user_dir: str, builtin: jinja2.BaseLoader):
        self.user = jinja2.FileSystemLoader(user_dir)
        self.user_dir = Path(user_dir)
        self.builtin = builtin

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        try:
            return self.user.get_source(environment, template)
        except jinja2.TemplateNotFound:
            source, filename, _ = self.builtin.get_source(environment, template)
            override = self.user_dir.joinpath(*template.split("/"))
            return source, filename, lambda: not override.exists()


# ---------------------------------------------------------------- filters (pure, safe for user templates)


def family(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def only_v4(cidrs: Iterable[str]) -> list[str]:
    return [c for c in cidrs if family(c) == 4]


def only_v6(cidrs: Iterable[str]) -> list[str]:
    return [c for c in cidrs if family(c) == 6]


#: The dotted netmask of each IPv4 prefix length.
_DOTTED_MASKS = tuple(str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask) for n in range(33))
#: A canonical IPv4 prefix: four decimal octets without leading zeros, a length without one.
_PLAIN_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)/(?:3[0-2]|[12]?\d)")


@functools.lru_cache(maxsize=1 << 16)
def netmask(cidr: str) -> str:
    """``10.0.0.0/23`` -> ``10.0.0.0 255.255.254.0`` (Cisco and FortiGate IPv4 syntax).

    A canonical prefix without host bits (every one a publication has) is read here, ~10x faster than by
    ``ipaddress`` (a first view of an AzureCloud ticket asks for ~3,000); anything else goes through
    ``ipaddress``, which gives or refuses it as before."""
    if _PLAIN_V4.fullmatch(cidr):
        address, _, length = cidr.partition("/")
        bits = int(length)
        if not int.from_bytes(socket.inet_aton(address), "big") & ((1 << (32 - bits)) - 1):
            return f"{address} {_DOTTED_MASKS[bits]}"
    network = ipaddress.IPv4Network(cidr)
    return f"{network.network_address} {network.netmask}"


_SERVICE_ABBREVIATIONS = {"azurecontainerregistry": "acr", "storage": "st", "microsoftcontainerregistry": "mcr"}


def object_name(tag: str, suffix: str = "", max_length: int = 63) -> str:
    """A firewall-safe object name for a tag: ``Storage.EastUS2`` -> ``wt_st_eastus2`` + suffix.

    Letters, digits and ``_`` only, because every firewall kind accepts those;
    too long names (ipset allows 31 characters) keep a hash to stay unique.
    """
    service, _, rest = tag.partition(".")
    base = _SERVICE_ABBREVIATIONS.get(service.lower(), service.lower())
    raw = re.sub(r"[^a-z0-9_]+", "_", f"wt_{base}_{rest}".lower() if rest else f"wt_{base}").strip("_")
    return _within(raw, suffix, max_length, unique_by=tag)


def _within(name: str, suffix: str, max_length: int, unique_by: str) -> str:
    """``name`` + ``suffix`` if that fits ``max_length``; else ``name`` cut short with a hash of
    ``unique_by``, so two long names that share a beginning stay apart."""
    if len(name) + len(suffix) <= max_length:
        return name + suffix
    digest = hashlib.blake2b(unique_by.encode(), digest_size=3).hexdigest()
    return name[: max_length - len(suffix) - len(digest) - 1] + "_" + digest + suffix


def address_name(cidr: str) -> str:
    """A per-CIDR address object name: ``135.130.158.0/23`` -> ``wt-135.130.158.0-23``."""
    return "wt-" + cidr.replace(":", "_").replace("/", "-")


def csv_row(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    # A leading = + - @ makes spreadsheets evaluate a cell: such text is quoted with a leading '.
    cells = ["" if v is None else (f"'{v}" if isinstance(v, str) and v[:1] in "=+-@" else v) for v in values]
    csv.writer(buffer, lineterminator="").writerow([one_line(c) if isinstance(c, str) else c for c in cells])
    return buffer.getvalue()


# Escaping per target (defence in depth: names and prefixes are checked at parse time as well).

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
_PLAIN_CIDR = re.compile(r"^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$")


def one_line(text: Any) -> str:
    """Any text on one line: control characters (newlines included) become ``?``."""
    text = str(text)
    # Every character _CONTROL matches is unprintable: printable text (nearly all of it) skips the regex.
    return text if text.isprintable() else _CONTROL.sub("?", text)


def cidr(prefix: Any) -> str:
    """A plain IPv4 or IPv6 network, or an error: no scope id, no whitespace, nothing a firewall would parse twice."""
    text = str(prefix)
    if not _checked_cidr(text):
        raise RenderError(f"refusing to render {one_line(text)[:80]!r}: not a plain CIDR prefix")
    return text


@functools.lru_cache(maxsize=1 << 16)
def _checked_cidr(text: str) -> bool:
    """Plain notation (digits, hex, dots, colons, one slash) of an address the OS parses, with a valid length."""
    if not _PLAIN_CIDR.match(text):
        return False
    address, _, length = text.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.inet_pton(family, address)
    except OSError:
        return False
    return int(length) <= (128 if family == socket.AF_INET6 else 32)


_PLACEHOLDER = re.compile(r"\{(cidr|name|mask)\}")

#: Strings ``cidr`` accepted, so that the same prefixes rendered again (every format, every ticket of a watch)
#: are checked with one set difference at C speed; cleared when it grows past the bound.
_KNOWN_CIDRS: set[str] = set()
_KNOWN_CIDRS_BOUND = 1 << 16  # as the lru_caches below and above: a daemon keeps a few megabytes at most


class CheckedCidrs(tuple):
    """Prefixes already passed through ``cidr`` (once per view, by ``render_formats``): not checked again per format.

    Two of them added (``objects.v4 + objects.v6`` in a template) stay checked.
    """

    def __add__(self, other: Any) -> Any:
        joined = tuple.__add__(self, other)
        if not isinstance(other, CheckedCidrs):
            return joined
        result = CheckedCidrs(joined)
        result.__dict__["parts"] = (self, other)  # its names and masks are its parts' (made once per list)
        return result


#: Digests of whole lists whose every value ``cidr`` accepted (``_list_digest``): the same lists (a ticket's
#: objects, a state's lists) are checked again by every view, and a pass over a list's text costs less than a set
#: look-up per value, each a cache miss once other work has run (AzureCloud's ~3,200 objects: 0.15 ms, not 0.65).
_CHECKED_LISTS: set[bytes] = set()
_CHECKED_LISTS_BOUND = 1 << 12


def _list_digest(values: Sequence[Any]) -> bytes | None:
    """A digest naming the list of strings ``values`` (joined by NUL, which none of them may hold: the text then
    says where each value ends), or None when it cannot name it so (a value that is not a string, or holds a NUL
    or a lone surrogate): such a list is checked value by value."""
    try:
        joined = "\0".join(values)
        if joined.count("\0") != len(values) - 1:
            return None
        return hashlib.blake2b(joined.encode(), digest_size=16).digest()
    except (TypeError, UnicodeEncodeError):
        return None


def checked_cidrs(prefixes: Iterable[Any]) -> CheckedCidrs:
    if isinstance(prefixes, CheckedCidrs):
        return prefixes
    values = prefixes if isinstance(prefixes, (list, tuple)) else list(prefixes)
    if not values:
        return CheckedCidrs(())
    digest = _list_digest(values)
    if digest is not None and digest in _CHECKED_LISTS:
        return CheckedCidrs(values)
    try:
        if _KNOWN_CIDRS.issuperset(values):  # the usual case, without building a set of the values
            unknown: set[str] = set()
        else:
            unknown = set(values).difference(_KNOWN_CIDRS)
    except TypeError:  # something unhashable: checked one by one (and refused)
        return CheckedCidrs(cidr(p) for p in values)
    if any(type(p) is not str for p in unknown):
        return CheckedCidrs(cidr(p) for p in values)
    for text in unknown:
        cidr(text)
    if len(_KNOWN_CIDRS) + len(unknown) > _KNOWN_CIDRS_BOUND:
        _KNOWN_CIDRS.clear()
    _KNOWN_CIDRS.update(unknown)
    if digest is not None:
        if len(_CHECKED_LISTS) >= _CHECKED_LISTS_BOUND:
            _CHECKED_LISTS.clear()
        _CHECKED_LISTS.add(digest)
    return CheckedCidrs(values)


class Block(str):
    """Lines built by ``each`` from checked prefixes: their line breaks are the template's own, kept as they are.

    ``newlines_only``: the only control characters in it are the line breaks between rows (the pattern has none).
    """

    newlines_only = False

    def __str__(self) -> str:
        # Itself, not a copy: templates print ``str(value)``, and a block of 13,000 rows is hundreds of kilobytes.
        return self


@jinja2.pass_eval_context
def replace_text(eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    """Jinja's ``replace``; a block whose only control characters are its line breaks, put on one line with printable
    text (``objects | each("{name}") | replace("\n", " ")``), is printed as it is instead of scanned again: the scan
    would find nothing to change."""
    if (isinstance(value, Block) and value.newlines_only and old == "\n" and type(new) is str and count is None
            and not eval_ctx.autoescape and new.isprintable()):
        return Block(str.replace(value, "\n", new))
    return jinja2.filters.do_replace(eval_ctx, value, old, new, count)


def _names(checked: CheckedCidrs) -> list[str]:
    """``address_name`` of each prefix without its ``wt-`` head, made for the whole list at once (C speed), once
    per list (a snippet names its objects twice: as objects, and as a group's members)."""
    names = checked.__dict__.get("names")
    if names is None:
        parts = checked.__dict__.get("parts")
        if parts:
            names = _names(parts[0]) + _names(parts[1])
        else:
            names = "\n".join(checked).replace(":", "_").replace("/", "-").split("\n") if checked else []
        checked.__dict__["names"] = names
    return names


def _masks(checked: CheckedCidrs) -> list[str]:
    """``netmask`` of each IPv4 prefix (cached), the prefix itself for IPv6; once per list."""
    masks = checked.__dict__.get("masks")
    if masks is None:
        parts = checked.__dict__.get("parts")
        if parts:
            masks = _masks(parts[0]) + _masks(parts[1])
        else:
            joined = "".join(checked)  # one C-speed search for each family's mark
            if ":" not in joined:
                masks = _netmasks(checked)
            elif "." not in joined:
                masks = list(checked)
            else:
                masks = [c if ":" in c else netmask(c) for c in checked]
        checked.__dict__["masks"] = masks
    return masks


#: ``netmask`` of the IPv4 prefixes rendered so far, read for a whole list at C speed; bounded as the caches above.
_NETMASKS: dict[str, str] = {}


def _netmasks(checked: Sequence[str]) -> list[str]:
    try:
        return list(map(_NETMASKS.__getitem__, checked))
    except KeyError:
        masks = list(map(netmask, checked))  # refuses what netmask refuses
        if len(_NETMASKS) + len(masks) > _KNOWN_CIDRS_BOUND:
            _NETMASKS.clear()
        _NETMASKS.update(zip(checked, masks))
        return masks


def each(prefixes: Iterable[Any], pattern: str) -> Block:
    """One ``pattern`` per prefix, joined by line breaks: ``{cidr}`` (checked), ``{name}`` (its object name),
    ``{mask}`` (``address netmask`` for IPv4). No ``str.format``: a pattern reaches no attribute, only these three.
    One call per list instead of a template loop per prefix: rule snippets of 13,000 prefixes render in milliseconds.
    """
    text = str(pattern)
    checked = checked_cidrs(prefixes)
    pieces = _PLACEHOLDER.split(text)  # text, key, text, key, ..., text
    literals, keys = pieces[0::2], pieces[1::2]
    count = len(checked)
    if not keys or not count:
        block = Block("\n".join([text] * count))
        block.newlines_only = text.isprintable()
        return block
    columns: dict[str, list[str] | Sequence[str]] = {"cidr": checked}
    if "name" in keys:
        columns["name"] = _names(checked)
        literals = [piece + "wt-" if i < len(keys) and keys[i] == "name" else piece for i, piece in enumerate(literals)]
    if "mask" in keys:
        columns["mask"] = _masks(checked)
    return _rows(literals, [columns[key] for key in keys], count)


def _rows(literals: Sequence[str], columns: Sequence[Sequence[str]], count: int) -> Block:
    """``count`` lines of ``literals[0] column[0] literals[1] ... literals[-1]``, as one join: per row, each
    column's value and the text after it, the last text of a row running on into the line break and the first
    text of the next row. The values hold no control characters (callers check or escape them)."""
    if len(columns) == 1 and count:  # one value per line: the texts around it join the values directly
        # The first text and the last are put on the first value and the last (a copy of the list, not of the
        # text): the block is written once, not once per concatenation.
        values = list(columns[0])
        values[0] = "".join((literals[0], values[0]))  # join: a str subclass (Markup) adds as the text it is
        values[-1] = "".join((values[-1], literals[1]))
        block = Block((literals[1] + "\n" + literals[0]).join(values))
        block.newlines_only = all(piece.isprintable() for piece in literals)
        return block
    if not count:  # (callers ask for rows of at least one value)
        block = Block(literals[0] + literals[-1])
        block.newlines_only = all(piece.isprintable() for piece in literals)
        return block
    width = 2 * len(columns)
    flat: list[str] = [""] * (width * count)
    for i, column in enumerate(columns):
        flat[2 * i::width] = column
        after = literals[i + 1] if i + 1 < len(columns) else literals[-1] + "\n" + literals[0]
        flat[2 * i + 1::width] = [after] * count
    flat[-1] = literals[-1]
    flat[0] = "".join((literals[0], flat[0]))
    block = Block("".join(flat))
    block.newlines_only = all(piece.isprintable() for piece in literals)
    return block


class _MarkupBlock(markupsafe.Markup):
    """``lines`` output for HTML: escaped items in the template's own markup, line breaks included."""

    verbatim = False  # set on what ``lines`` returns; what Markup's methods derive from it is checked as usual


def _html_item(item: Any) -> str:
    """What ``{{ item }}`` prints in an autoescaped template: one line, HTML-escaped."""
    if type(item) is str and (item in _KNOWN_CIDRS or _checked_cidr(item)):  # a prefix has nothing to escape
        return item
    return str(markupsafe.escape(one_line(item)))


def lines(items: Iterable[Any], pattern: str, escape: str = "one_line") -> Any:
    """One ``pattern`` per item, joined by line breaks, ``{item}`` being the item escaped with ``md``, ``one_line``
    or ``html`` (so never a line break of its own): a ticket's prefix lists in one call instead of a template loop
    per prefix. Unlike ``each``, anything is accepted, escaped: ticket text shows what a snippet refuses. With
    ``html`` the pattern's own text is markup only when marked safe (``"<li>{item}</li>" | safe``)."""
    escaper = {"md": markdown, "one_line": one_line, "html": _html_item}.get(str(escape))
    if escaper is None:
        raise RenderError(f"lines: escape must be md, one_line or html, not {one_line(escape)[:40]!r}")
    values = items if isinstance(items, (list, tuple)) else list(items)
    if not (values and set(map(type, values)) == {str} and _KNOWN_CIDRS.issuperset(values)):
        values = list(map(escaper, values))  # checked prefixes are the same escaped: a list of them is kept as is
    text = str(pattern)
    literals = text.split("{item}")
    if escape == "html" and not isinstance(pattern, markupsafe.Markup):
        literals = [str(markupsafe.escape(piece)) for piece in literals]
    if len(literals) == 1 or not values:
        block = Block("\n".join([literals[0]] * len(values)))
        block.newlines_only = literals[0].isprintable()
    else:
        block = _rows(literals, [values] * (len(literals) - 1), len(values))
    if escape != "html":
        return block
    marked = _MarkupBlock(block)
    marked.verbatim = block.newlines_only
    return marked


def shell_word(text: Any) -> str:
    """One POSIX shell word, single-quoted, on one line."""
    return shlex.quote(one_line(text))


def quoted(text: Any) -> str:
    """A double-quoted string for nft, FortiOS and PAN-OS: one line, without quotes or backslashes inside."""
    return '"' + one_line(text).replace("\\", "/").replace('"', "'") + '"'


def hcl_string(text: Any) -> str:
    """An HCL (Terraform) string literal: JSON quoting, and no ``${`` / ``%{`` template sequences."""
    return json.dumps(one_line(text)).replace("${", "$${").replace("%{", "%%{")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")


def markdown(text: Any) -> str:
    """Text for Markdown: HTML characters as entities, Markdown punctuation backslash-escaped, one line."""
    if type(text) is str and (text in _KNOWN_CIDRS or _checked_cidr(text)):  # a prefix has none of them
        return text
    escaped = html.escape(one_line(text), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", escaped)


def short_name(base: str, suffix: str = "", max_length: int = 31) -> str:
    """``base`` + ``suffix`` within ``max_length`` (ipset allows 31), a hash keeping long names unique."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", str(base))
    return _within(clean, suffix, max_length, unique_by=clean)


def _percent(value: float) -> str:
    return f"{value:.0%}"


class _JSONText(markupsafe.Markup):
    """``tojson`` output known to hold no control character (see ``json_text``)."""


class CidrList(list):
    """``cidrs`` output: prefixes checked by ``cidr``, which JSON needs no escaping for (see ``json_text``)."""


def cidr_list(prefixes: Iterable[Any]) -> CidrList:
    return CidrList(checked_cidrs(prefixes))


_DEFAULT_JSON = {"sort_keys": True}  # Jinja's json.dumps_kwargs policy, which the fast path of json_text writes
_JSON_DEPTH = 4  # how deep json_text looks for prefix lists (a snippet's are at the second level)


def _json_skeleton(value: Any, lists: list[Sequence[str]], depth: int = 0) -> Any:
    """``value`` with each non-empty checked prefix list (``cidrs``, ``each``'s input) replaced by a placeholder
    string naming its place in ``lists``; other values as they are."""
    if isinstance(value, (CidrList, CheckedCidrs)):
        if not value:
            return value
        lists.append(value)
        return f"\x00{len(lists) - 1}\x00"
    if depth >= _JSON_DEPTH:
        return value
    if type(value) is dict:
        return {k: _json_skeleton(v, lists, depth + 1) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_json_skeleton(v, lists, depth + 1) for v in value]
    return value


def _json_with_lists(value: Any) -> str | None:
    """``htmlsafe_json_dumps(value, sort_keys=True)`` with its prefix lists written by one join each (C speed: a
    13,000-prefix state is ~10 times faster than the encoder's item by item), or None when it has none. The lists'
    prefixes hold no character to escape (digits, hex letters, ``.:/``), so the rest is escaped alone."""
    lists: list[Sequence[str]] = []
    skeleton = _json_skeleton(value, lists)
    if not lists:
        return None
    text = str(jinja2.utils.htmlsafe_json_dumps(skeleton, **_DEFAULT_JSON))
    for i, prefixes in enumerate(lists):
        placeholder = f'"\\u0000{i}\\u0000"'
        if text.count(placeholder) != 1:  # the same text in the data itself: written the usual way
            return None
        text = text.replace(placeholder, '["' + '", "'.join(prefixes) + '"]')
    return text


@jinja2.pass_eval_context
def json_text(eval_ctx: Any, value: Any, indent: int | None = None) -> markupsafe.Markup:
    """Jinja's ``tojson``. JSON escapes every control character below U+0020; ASCII output on one line (no
    indent) without U+007F has none left, so it is printed without scanning it again (a state is tens of kilobytes)."""
    policies = eval_ctx.environment.policies
    fast = None
    if indent is None and policies["json.dumps_function"] is None and policies["json.dumps_kwargs"] == _DEFAULT_JSON:
        try:
            fast = _json_with_lists(value)
        except TypeError:  # a prefix list of something else than text: the encoder says what
            fast = None
    text = markupsafe.Markup(fast) if fast is not None else jinja2.filters.do_tojson(eval_ctx, value, indent)
    return _JSONText(text) if indent is None and text.isascii() and "\x7f" not in text else text


FILTERS: dict[str, Callable[..., Any]] = {
    "v4": only_v4,
    "v6": only_v6,
    "netmask": netmask,
    "object_name": object_name,
    "address_name": address_name,
    "csv_row": csv_row,
    "percent": _percent,
    "one_line": one_line,
    "cidr": cidr,
    "shell": shell_word,
    "quoted": quoted,
    "hcl": hcl_string,
    "md": markdown,
    "short_name": short_name,
    "each": each,
    "lines": lines,
    "replace": replace_text,
    "tojson": json_text,
    "cidrs": cidr_list,
}


# ---------------------------------------------------------------- environment


def _one_line_output(value: Any) -> Any:
    """Every ``{{ expression }}`` prints on one line, in every format: a newline in data (a tag name, a prefix
    with a scope id) can never start a line of its own in a script. Line breaks come from template text only."""
    if type(value) is str:
        return value if value.isprintable() else _CONTROL.sub("?", value)
    if isinstance(value, (Block, _JSONText)) or (isinstance(value, _MarkupBlock) and value.verbatim):
        return value
    if isinstance(value, markupsafe.Markup):
        return value if value.isprintable() else markupsafe.Markup(_CONTROL.sub("?", str(value)))
    if isinstance(value, str):
        return value if value.isprintable() else _CONTROL.sub("?", value)
    return value


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str | None, output_cap: int) -> ImmutableSandboxedEnvironment:
    """One sandboxed environment per template folder (and output cap), shared so templates compile once per process.

    ``auto_reload`` makes a running daemon pick up edited user templates (a
    stat per render); built-in templates never change under it.
    """
    builtin = _PackageLoader(resources.files("watcher.templates"))
    env = BoundedSandbox(
        loader=_UserFirstLoader(template_dir, builtin) if template_dir else builtin,
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False,
                                            default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
        finalize=_one_line_output,
    )
    env.filters.update(FILTERS)
    env.filters.update(bounded_filters())
    env.globals.update(range=counting_range, lipsum=bounded_lipsum)
    env.output_cap = output_cap
    return env


class Renderer:
    """Renders tickets with the built-in templates and the user's overrides."""

    def __init__(self, settings: TicketSettings):
        self.template_dir = settings.template_dir
        self.cap = settings.output_cap_bytes
        self.seconds = settings.render_seconds
        if self.template_dir and not Path(self.template_dir).is_dir():
            raise RenderError(f"template folder {self.template_dir} does not exist")
        self.env = _environment(self.template_dir, self.cap)

    def origin(self, fmt: str) -> str:
        """``user`` when the user's folder overrides the format's template, else ``built-in``."""
        name = template_name(fmt)
        if self.template_dir and (Path(self.template_dir) / name).is_file():
            return "user"
        return "built-in"

    def render(self, fmt: str, data: Mapping[str, Any]) -> str:
        name = template_name(fmt)
        where = f"{self.origin(fmt)} template {name}"
        limit = RenderLimit(where, self.seconds)
        token = ACTIVE_LIMIT.set(limit)
        previous_trace = sys.gettrace()
        try:
            template = self.env.get_template(name)
            limit.restart()  # the clock is for running the template, not for compiling it (once per process)
            if self.origin(fmt) == "user":
                # A user template's own loops (over data, not range) are counted line by line;
                # the built-ins are ours, and run untraced for speed.
                sys.settrace(line_tracer(template.filename or name, limit))
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(**data):
                size += len(chunk)  # characters: at most 4 bytes each; the exact check is below
                if size > self.cap and len("".join(chunks).encode("utf-8")) + len(chunk.encode("utf-8")) > self.cap:
                    raise RenderError(f"{where}: output exceeds the cap of {self.cap} bytes")
                chunks.append(chunk)
                if len(chunks) % 256 == 0:
                    limit.check_time()
            limit.check_time()
            return "".join(chunks)
        except RenderError as exc:
            if str(exc).startswith(where):
                raise
            raise RenderError(f"{where}: {exc}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{where}: syntax error on line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"{where}: not found ({exc.message})") from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderError(f"{where}: refused by the sandbox: {exc}") from None
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{where}: {exc.message}") from None
        except MemoryError:
            raise RenderError(f"{where}: ran out of memory") from None
        except RecursionError:
            raise RenderError(f"{where}: recursion too deep") from None
        except Exception as exc:  # a user template can raise anything from a filter or a test
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None
        finally:
            sys.settrace(previous_trace)
            ACTIVE_LIMIT.reset(token)


#: Templates the built-in ones include (compiled on first use like the others).
INCLUDED_TEMPLATES = ("rules/_header.j2", "_status.md.j2")


def compile_templates(settings: TicketSettings, formats: Iterable[str] = FORMATS) -> None:
    """Compile the templates of ``formats`` now (a server does it before it listens: a first render would pay
    ~0.3 s for the nine rule templates). A template that does not compile is left for its render to report."""
    renderer = Renderer(settings)
    for name in [*(template_name(fmt) for fmt in formats), *INCLUDED_TEMPLATES]:
        try:
            renderer.env.get_template(name)
        except jinja2.TemplateError:
            pass


def template_name(fmt: str) -> str:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise RenderError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})") from None


def render(settings: Settings, fmt: str, data: Mapping[str, Any]) -> str:
    """One format of one ticket view (see ``tickets.view``)."""
    return Renderer(settings.tickets).render(fmt, data)


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class TemplateCheck:
    format: str
    template: str
    origin: str
    error: RenderError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_templates(settings: Settings) -> list[TemplateCheck]:
    """Render every format against sample tickets (open and held); report each template's result."""
    try:
        renderer = Renderer(settings.tickets)
    except RenderError as exc:
        return [TemplateCheck(fmt, name, "user", exc) for fmt, name in FORMATS.items()]
    samples = sample_views()
    results = []
    for fmt, name in FORMATS.items():
        error: RenderError | None = None
        for sample in samples:
            try:
                renderer.render(fmt, sample)
            except RenderError as exc:
                error = exc
                break
        results.append(TemplateCheck(fmt, name, renderer.origin(fmt), error))
    return results


def sample_views() -> list[dict[str, Any]]:
    """Made-up tickets (open, held, approved with a removal date, baseline) covering every field a template may use."""
    new = store.PublicationInfo(2, "public", dt.date(2025, 10, 28), 401, "f" * 64, "ServiceTags_Public_20251028.json",
                                dt.datetime(2025, 10, 29, tzinfo=dt.timezone.utc), 3, 6)
    watch = ResolvedWatch(
        name="example", cloud="public", regions=("eastus2",), data_endpoint=True,
        tags=(WatchedTag("AzureContainerRegistry.EastUS2", "registry", "eastus2", ("example.azurecr.io",)),
              WatchedTag("Storage.EastUS2", "data", "eastus2", ("example.eastus2.data.azurecr.io",))),
        warnings=(),
    )
    before = {"AzureContainerRegistry.EastUS2": diffs.TagState(5, frozenset({"20.10.0.0/24", "20.10.1.0/24"})),
              "Storage.EastUS2": diffs.TagState(7, frozenset({"135.130.0.0/24", "2603:1030:400::/48",
                                                              "2603:1030:40f::/48"}))}
    after = {"AzureContainerRegistry.EastUS2": diffs.TagState(6, frozenset({"20.10.0.0/23"})),
             "Storage.EastUS2": diffs.TagState(8, frozenset({"135.130.0.0/24", "135.130.158.0/23",
                                                             "2603:1030:400::/48", "2603:1030:40f::/49"}))}
    approved = states.ApprovedState(
        id=1, cloud="public", watch="example", ticket_id=1, publication_id=1,
        publication={"date": "2025-10-13", "change_number": 400},
        approved_at=dt.datetime(2025, 10, 14, tzinfo=dt.timezone.utc), removals_at=None,
        tags={n: states.TagApproval(t.sorted_prefixes(), t.change_number, {"date": "2025-10-13", "change_number": 400})
              for n, t in before.items()},
        final=states.family_lists(p for t in before.values() for p in t.prefixes), before=states.empty_lists())
    views = []
    cases = (("open", (), approved, None), ("hold", ("sample plausibility note",), approved, None),
             ("approved", (), approved, "2025-11-04T00:00:00+00:00"), ("open", (), None, None))
    for ticket_id, (state, implausible, base, removals_at) in enumerate(cases, 1):
        changes = [diffs.diff_tag(n, before.get(n) if base else None, after[n]) for n in sorted(after)]
        context = tickets.build_context(watch, base, new, changes, after,
                                        uid=f"00000000-0000-4000-8000-00000000000{ticket_id}",
                                        removal_hold_ratio=0.3, implausible=implausible)
        view = dict(context)
        view["ticket"] = {"id": ticket_id, "uid": context["uid"], "state": state, "kind": context["kind"],
                          "ref": f"[watcher ticket {ticket_id}]", "superseded_by": None}
        view["removals_allowed"] = state != "hold"
        view["trail"] = [{"at": "2025-10-29T00:00:00+00:00", "actor": "watcher", "action": "create",
                          "to_state": state, "comment": ""}]
        view["approval"] = {"removals_at": removals_at[:10] if removals_at else None, "additions_only": False}
        final = states.family_lists(p for t in after.values() for p in t.prefixes)
        old = base.final if base else states.empty_lists()
        phase = "remove" if state == "approved" else "add"
        objects = states.union(old, final) if phase == "add" else final
        view["firewall"] = {
            "phase": phase, "objects": objects,
            "dropped": {f: [c for c in old[f] if c not in objects[f]] for f in states.FAMILIES},
            "base": "wt_example", "nsg_priority": 3004, "nft": {"family": "inet", "table": "watcher"},
            "removals_at": removals_at,
        }
        views.append(view)
    return views


def render_ticket(conn: Any, settings: Settings, ticket: tickets.TicketInfo, fmt: str, phase: str = "add") -> str:
    """One format of a stored ticket: its text with the review trail, or its snippet for ``phase``."""
    return render_formats(conn, settings, ticket, (fmt,), phase)[fmt]


def render_formats(conn: Any, settings: Settings, ticket: tickets.TicketInfo, formats: Iterable[str],
                   phase: str = "add") -> dict[str, str]:
    """Several formats of a stored ticket from one view (read and computed once, one check of the state in force)."""
    wanted = list(formats)
    renderer = Renderer(settings.tickets)
    data = formats_view(conn, settings, ticket, wanted, phase, renderer)
    return {fmt: renderer.render(fmt, data) for fmt in wanted}


def formats_view(conn: Any, settings: Settings, ticket: tickets.TicketInfo, formats: Sequence[str],
                 phase: str | None, renderer: "Renderer") -> dict[str, Any]:
    """The one view that renders every format of ``formats`` of a stored ticket (``phase``: the snippets' phase, or
    None when no snippet is wanted): the trail only when a format shows it, the snippet objects checked once."""
    from . import review  # review depends on tickets only; imported here to keep module start-up light

    for fmt in formats:
        template_name(fmt)
    # The built-in rule templates do not show the review trail: rendering only those reads no events.
    trail = any(fmt not in RULE_FORMATS or renderer.origin(fmt) == "user" for fmt in formats)
    data = review.full_view(conn, ticket, settings, phase if any(f in RULE_FORMATS for f in formats) else None,
                            trail=trail)
    if "firewall" in data:
        try:  # checked once here instead of once per format
            for key in ("objects", "dropped"):
                data["firewall"][key] = {f: checked_cidrs(v) for f, v in data["firewall"][key].items()}
        except RenderError as exc:
            raise RenderError(f"ticket {ticket.id}: {exc}") from None
    return data

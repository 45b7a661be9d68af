"""Render stage: Jinja2 templates turn a ticket's stored context into a ticket and rule snippets.

Built-in templates live in the package (``watcher.templates``); a user's
template folder (``[tickets] template_dir``) overrides them file by file. All
of them run in Jinja2's immutable sandbox with ``StrictUndefined``: a user
template cannot reach Python internals, cannot change the data it is given,
and a misspelt variable is an error, not an empty string. Output is capped
(``output_cap_bytes``) while it is generated, so a runaway loop stops early.
HTML templates are autoescaped; text templates are not escaped at all.

Broken templates are found by ``check_templates`` (rendering every format
against sample tickets) when the configuration is checked, not at send time.
"""
from __future__ import annotations


import csv
import functools
import datetime as dt
import hashlib
import io
import ipaddress
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import diff as diffs
from . import store, tickets
from .errors import RenderError
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
}
TICKET_FORMATS = ("md", "html", "txt")
RULE_FORMATS = ("nftables", "iptables", "azure-nsg", "paloalto", "cisco-asa", "fortigate", "csv")


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


def netmask(cidr: str) -> str:
    """``10.0.0.0/23`` -> ``10.0.0.0 255.255.254.0`` (Cisco and FortiGate IPv4 syntax)."""
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
    if len(raw) + len(suffix) <= max_length:
        return raw + suffix
    digest = hashlib.blake2b(tag.encode(), digest_size=3).hexdigest()
    return raw[: max_length - len(suffix) - len(digest) - 1] + "_" + digest + suffix


def address_name(cidr: str) -> str:
    """A per-CIDR address object name: ``135.130.158.0/23`` -> ``wt-135.130.158.0-23``."""
    return "wt-" + cidr.replace(":", "_").replace("/", "-")


def csv_row(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _percent(value: float) -> str:
    return f"{value:.0%}"


FILTERS: dict[str, Callable[..., Any]] = {
    "v4": only_v4,
    "v6": only_v6,
    "netmask": netmask,
    "object_name": object_name,
    "address_name": address_name,
    "csv_row": csv_row,
    "percent": _percent,
}


# ---------------------------------------------------------------- environment


#: The largest integer power a template may compute, in bits (an estimate from above, checked before computing).
MAX_POWER_BITS = 4096
_SEQUENCES = (str, bytes, list, tuple)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` checked before they allocate.

    The output cap only sees what a template emits: ``{{ "x" * 10**9 }}`` or
    ``{% set n = 9 ** 10**9 %}`` would take gigabytes or minutes before a
    single byte of output. Both are refused from the operands' sizes instead.
    """

    intercepted_binops = frozenset({"*", "**"})
    output_cap = 2 * 1024 * 1024

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (isinstance(sequence, _SEQUENCES) and isinstance(times, int)
                        and len(sequence) * times > self.output_cap):
                    raise jinja2.exceptions.SecurityError(
                        f"a repetition of {len(sequence)} items {times} times exceeds the output cap "
                        f"of {self.output_cap} bytes")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(f"a power of more than {MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str | None, output_cap: int) -> ImmutableSandboxedEnvironment:
    """One sandboxed environment per template folder (and output cap), shared so templates compile once per process.

    ``auto_reload`` makes a running daemon pick up edited user templates (a
    stat per render); built-in templates never change under it.
    """
    builtin = _PackageLoader(resources.files("watcher.templates"))
    env = _BoundedSandbox(
        loader=_UserFirstLoader(template_dir, builtin) if template_dir else builtin,
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False,
                                            default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters.update(FILTERS)
    env.output_cap = output_cap
    return env


class Renderer:
    """Renders tickets with the built-in templates and the user's overrides."""

    def __init__(self, settings: TicketSettings):
        self.template_dir = settings.template_dir
        self.cap = settings.output_cap_bytes
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
        try:
            template = self.env.get_template(name)
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(**data):
                size += len(chunk.encode("utf-8"))
                if size > self.cap:
                    raise RenderError(f"{where}: output exceeds the cap of {self.cap} bytes")
                chunks.append(chunk)
            return "".join(chunks)
        except RenderError:
            raise
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{where}: syntax error on line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"{where}: not found ({exc.message})") from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderError(f"{where}: refused by the sandbox: {exc}") from None
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{where}: {exc.message}") from None
        except Exception as exc:  # a user template can raise anything from a filter or a test
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None


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
    """Two made-up tickets, one open and one held, covering every field a template may use."""
    old = store.PublicationInfo(1, "public", dt.date(2025, 10, 13), 400, "0" * 64, "ServiceTags_Public_20251013.json",
                                dt.datetime(2025, 10, 14, tzinfo=dt.timezone.utc), 3, 6)
    new = store.PublicationInfo(2, "public", dt.date(2025, 10, 28), 401, "f" * 64, "ServiceTags_Public_20251028.json",
                                dt.datetime(2025, 10, 29, tzinfo=dt.timezone.utc), 3, 6)
    watch = ResolvedWatch(
        name="example", cloud="public", regions=("eastus2",), data_endpoint=True,
        tags=(WatchedTag("AzureContainerRegistry.EastUS2", "registry", "eastus2", ("example.azurecr.io",)),
              WatchedTag("Storage.EastUS2", "data", "eastus2", ("example.eastus2.data.azurecr.io",))),
        warnings=(),
    )
    changes = [
        diffs.diff_tag("AzureContainerRegistry.EastUS2",
                       diffs.TagState(5, frozenset({"20.10.0.0/24", "20.10.1.0/24"})),
                       diffs.TagState(6, frozenset({"20.10.0.0/23"}))),
        diffs.diff_tag("Storage.EastUS2",
                       diffs.TagState(7, frozenset({"135.130.0.0/24", "2603:1030:400::/48", "2603:1030:40f::/48"})),
                       diffs.TagState(8, frozenset({"135.130.0.0/24", "135.130.158.0/23", "2603:1030:400::/48",
                                                   "2603:1030:40f::/49"}))),
    ]
    views = []
    for ticket_id, (implausible, state) in enumerate((((), "open"), (("sample plausibility note",), "hold")), 1):
        context = tickets.build_context(watch, old, new, changes, uid=f"00000000-0000-4000-8000-00000000000{ticket_id}",
                                        removal_hold_ratio=0.3, implausible=implausible)
        assert context is not None
        view = dict(context)
        view["ticket"] = {"id": ticket_id, "uid": context["uid"], "state": state,
                          "ref": f"[watcher ticket {ticket_id}]"}
        view["removals_allowed"] = state != "hold"
        views.append(view)
    return views

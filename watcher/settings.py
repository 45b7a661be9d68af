"""One typed settings object, built once at the edge and passed in.

Sources, later ones winning: built-in defaults, the TOML config file
(``--config`` or ``WATCHER_CONFIG``), ``WATCHER_*`` environment variables, and
command-line options. Nothing else in the package reads the environment.
"""
from __future__ import annotations

import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: CLI cloud name -> the ``cloud`` value inside Microsoft's files.
CLOUD_FILE_NAMES = {
    "public": "Public",
    "usgov": "AzureGovernment",
    "china": "China",
    "germany": "AzureGermany",
}
FILE_CLOUD_NAMES = {v.lower(): k for k, v in CLOUD_FILE_NAMES.items()}
DEFAULT_DATABASE_URL = "sqlite:///watcher.db"


def check_cloud(name: str) -> str:
    name = name.lower()
    if name not in CLOUD_FILE_NAMES:
        raise ConfigError(f"unknown cloud {name!r} (choose from {', '.join(CLOUD_FILE_NAMES)})")
    return name


@dataclass(frozen=True)
class RegistryWatch:
    """A container registry whose firewall rules the watcher keeps in step."""

    name: str
    regions: tuple[str, ...]
    data_endpoint: bool = False
    cloud: str = "public"
    include_mcr: bool = False
    extra_tags: tuple[str, ...] = ()
    #: firewall kinds (render.RULE_FORMATS) whose full-state snippets the ticket mails carry
    firewalls: tuple[str, ...] = ()

    @property
    def login_server(self) -> str:
        suffix = {"usgov": "azurecr.us", "china": "azurecr.cn", "germany": "azurecr.de"}.get(self.cloud, "azurecr.io")
        return f"{self.name}.{suffix}"


@dataclass(frozen=True)
class FetchSettings:
    timeout_seconds: float = 30.0          # per connect/read
    deadline_seconds: float = 300.0        # whole poll of one cloud
    max_bytes: int = 50 * 1024 * 1024      # decoded body cap
    retries: int = 4
    backoff_seconds: float = 1.0
    allowed_hosts: tuple[str, ...] = ("download.microsoft.com", "www.microsoft.com")
    max_redirects: int = 5                 # redirects followed per request
    proxy: str | None = None
    source_url: str | None = None          # mirror URL, file:// path or local folder
    user_agent: str = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0 Safari/537.36"
    )
    min_tag_ratio: float = 0.8             # plausibility: tags vs the last publication
    quarantine_dir: str = "quarantine"


@dataclass(frozen=True)
class NotifySettings:
    urls: tuple[str, ...] = ()
    max_attempts: int = 8
    backoff_seconds: float = 60.0


@dataclass(frozen=True)
class TicketSettings:
    template_dir: str | None = None
    removal_hold_ratio: float = 0.30
    output_cap_bytes: int = 2 * 1024 * 1024
    removal_delay_days: int = 7            # removals wait this long after the publication (or the approval)
    four_eyes: bool = False                # who releases a hold or approves a baseline did not create/change it
    nft_table: str = "inet watcher"        # nftables family and table the sets live in
    nsg_priority_base: int = 3000          # Azure NSG: mcr, extra tags, then registries in config order
    render_seconds: float = 5.0            # wall-clock limit of one template render
    # Plausibility (see plausible.py): a publication that breaks one has its tickets held.
    min_prefix_length_v4: int = 8          # a wider added IPv4 prefix is implausible
    min_prefix_length_v6: int = 16         # a wider added IPv6 prefix is implausible
    max_withdrawn_share: float = 0.25      # withdrawing more of a cloud's tags at once is implausible
    #: blocks not held as bogons (a lab mirror serving test files in private space); empty in production
    bogon_exemptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class McrSettings:
    """Microsoft Container Registry as a watch of its own (named "mcr"), once per configured cloud."""

    enabled: bool = False
    firewalls: tuple[str, ...] = ()   # as a registry's ``firewalls``


@dataclass(frozen=True)
class DaemonSettings:
    schedule: str | None = None            # cron; None = daily at a jittered minute
    http_port: int | None = None
    unhealthy_after_failures: int = 3
    stale_after_days: int = 8
    run_deadline_seconds: float = 1800.0
    retry_backoff_seconds: float = 60.0    # first retry of a failed cloud within a run


@dataclass(frozen=True)
class WebSettings:
    """The HTTP listener of ``watcher serve`` and of ``watcher run`` (on ``[daemon] http_port``)."""

    http_host: str = "127.0.0.1"           # loopback unless asked: the endpoints carry no authentication
    http_port: int = 8080                  # ``watcher serve``'s port
    tls_cert: str | None = None            # PEM files; both set = HTTPS
    tls_key: str | None = None
    read_timeout_seconds: float = 10.0     # a request must arrive whole within this, or the connection is closed
    idle_timeout_seconds: float = 5.0      # keep-alive: an idle connection is closed after this
    max_connections: int = 100             # over it, requests get 503 at once
    warm_up_seconds: float = 5.0           # at start, before listening: pages made ahead for at most this (0: off)
    # The review desk's sign-in (see watcher.web.auth).
    session_hours: float = 12.0            # a signed-in session lasts this long
    login_attempts: int = 5                # failed sign-ins per user and per address ...
    login_window_seconds: float = 900.0    # ... within this window, then sign-in waits
    trusted_proxy_header: str | None = None  # e.g. "X-Forwarded-User" from an SSO proxy ...
    trusted_proxies: tuple[str, ...] = ()  # ... believed only from these addresses


@dataclass(frozen=True)
class FeedSettings:
    """The feeds firewalls pull (``/feeds/...``), their consumers and the static export."""

    public: bool = False                   # true: feeds need no token (only behind a network you trust)
    auto_applied: bool = False             # an approved ticket becomes applied once every consumer has its list
    stale_after_hours: float = 24.0        # a consumer silent longer than this makes the watcher unhealthy
    cache_seconds: int = 300               # Cache-Control max-age of a feed
    export_dir: str | None = None          # the daemon keeps the feed files here (for nginx, a CDN, S3)
    clock_file: str | None = None          # tests only: a file holding the ISO time the feeds take as now


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    clouds: tuple[str, ...] = ("public",)
    registries: tuple[RegistryWatch, ...] = ()
    extra_tags: tuple[str, ...] = ()
    fetch: FetchSettings = field(default_factory=FetchSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    tickets: TicketSettings = field(default_factory=TicketSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    web: WebSettings = field(default_factory=WebSettings)
    mcr: McrSettings = field(default_factory=McrSettings)
    feeds: FeedSettings = field(default_factory=FeedSettings)
    config_path: str | None = None

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _as_str_tuple(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


#: Bounds of numeric settings (inclusive); every other number must be at least 0. The maxima
#: refuse values no deployment means (a typo, an extra zero) before they disable a guard.
_DAY = 86400.0
_MINIMUM = {"max_attempts": 1, "unhealthy_after_failures": 1, "stale_after_days": 1, "http_port": 1,
            "max_connections": 1, "nsg_priority_base": 100}
_MAXIMUM = {
    "http_port": 65535, "min_tag_ratio": 1.0, "removal_hold_ratio": 1.0, "max_withdrawn_share": 1.0,
    "min_prefix_length_v4": 32, "min_prefix_length_v6": 128,
    "timeout_seconds": _DAY, "deadline_seconds": _DAY, "backoff_seconds": _DAY, "retry_backoff_seconds": _DAY,
    "run_deadline_seconds": 7 * _DAY,
    "max_bytes": 1024**3, "output_cap_bytes": 1024**3,
    "retries": 100, "max_redirects": 50, "max_attempts": 1000,
    "unhealthy_after_failures": 10_000, "stale_after_days": 3650,
    "removal_delay_days": 365, "nsg_priority_base": 4000, "render_seconds": 300.0,
    "session_hours": 24 * 30.0, "login_attempts": 1000, "login_window_seconds": _DAY, "warm_up_seconds": 600.0,
}
#: Durations and sizes that must be more than 0.
_POSITIVE = {"timeout_seconds", "deadline_seconds", "max_bytes", "output_cap_bytes", "run_deadline_seconds",
             "read_timeout_seconds", "idle_timeout_seconds", "render_seconds", "stale_after_hours",
             "session_hours", "login_attempts", "login_window_seconds"}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a settings field's type; ints are accepted where floats are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        return _as_str_tuple(value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            raise ConfigError(f"{where} must be {'a whole number' if hint is int else 'a number'}, not {value!r}")
        return hint(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _check_range(key: str, value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):  # nan compares false with every bound: it would pass them all
        raise ConfigError(f"{where} must be a finite number, not {value!r}")
    low, high = _MINIMUM.get(key, 0), _MAXIMUM.get(key)
    if value < low or (high is not None and value > high) or (key in _POSITIVE and value <= 0):
        if key in _POSITIVE:
            shown = int(high) if isinstance(high, float) and high.is_integer() else high
            bounds = "more than 0" + (f" and at most {shown}" if high is not None else "")
        else:
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where} must be {bounds}, not {value!r}")


def check_firewalls(kinds: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Firewall kinds named in the config: each a snippet format the watcher renders, once."""
    from .render import RULE_FORMATS  # render imports this module: a top-level import would be circular

    unknown = [k for k in kinds if k not in RULE_FORMATS]
    if unknown:
        raise ConfigError(f"{where}: unknown firewall kind {unknown[0]!r} (choose from {', '.join(RULE_FORMATS)})")
    return tuple(dict.fromkeys(kinds))


def _section(cls: type, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys: {', '.join(sorted(unknown))}")
    values = {}
    for key, value in raw.items():
        values[key] = _typed(value, hints[key], f"{where}.{key}")
        _check_range(key, values[key], f"{where}.{key}")
        if key == "firewalls":
            values[key] = check_firewalls(values[key], f"{where}.{key}")
    return cls(**values)


def _registry(raw: Any, index: int) -> RegistryWatch:
    where = f"registries[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"name", "regions", "data_endpoint", "cloud", "include_mcr", "tags", "firewalls"}
    if raw.get("include_mcr"):
        # One MCR watch for all registries, or two registries would get two identical MCR tickets.
        raise ConfigError(f"{where}.include_mcr is replaced by a watch of its own: [mcr] enabled = true")
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name is required")
    name = name.lower().removesuffix(".azurecr.io")
    if name == "mcr":
        raise ConfigError(f"{where}.name 'mcr' is the Microsoft Container Registry watch: enable it with [mcr] enabled = true")
    if not name.isalnum():
        raise ConfigError(f"{where}.name {name!r} is not a registry name (letters and digits only)")
    regions = _as_str_tuple(raw.get("regions", []), f"{where}.regions")
    if not regions:
        raise ConfigError(f"{where}.regions must name at least one region")
    return RegistryWatch(
        name=name,
        regions=tuple(r.lower().replace(" ", "") for r in regions),
        data_endpoint=_typed(raw.get("data_endpoint", False), bool, f"{where}.data_endpoint"),
        cloud=check_cloud(_typed(raw.get("cloud", "public"), str, f"{where}.cloud")),
        include_mcr=_typed(raw.get("include_mcr", False), bool, f"{where}.include_mcr"),
        extra_tags=_as_str_tuple(raw.get("tags", []), f"{where}.tags"),
        firewalls=check_firewalls(_as_str_tuple(raw.get("firewalls", []), f"{where}.firewalls"), f"{where}.firewalls"),
    )


def settings_from_mapping(raw: Mapping[str, Any], config_path: str | None = None) -> Settings:
    known = {"database_url", "clouds", "registries", "tags", "fetch", "notify", "tickets", "daemon", "web", "mcr", "feeds"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"config has unknown keys: {', '.join(sorted(unknown))}")
    regs = raw.get("registries", [])
    if not isinstance(regs, list):
        raise ConfigError("registries must be an array of tables ([[registries]])")
    registries = tuple(_registry(r, i) for i, r in enumerate(regs))
    seen: dict[tuple[str, str], int] = {}
    for index, registry in enumerate(registries):
        first = seen.setdefault((registry.cloud, registry.name), index)
        if first != index:  # one ticket per registry and publication: two watches of one name would collide
            raise ConfigError(f"registries[{index}]: registry {registry.name!r} is already configured in registries[{first}]")
    return Settings(
        database_url=_typed(raw.get("database_url", DEFAULT_DATABASE_URL), str, "database_url"),
        clouds=tuple(check_cloud(c) for c in _as_str_tuple(raw.get("clouds", ["public"]), "clouds")),
        registries=registries,
        extra_tags=_as_str_tuple(raw.get("tags", []), "tags"),
        fetch=_section(FetchSettings, raw.get("fetch"), "fetch"),
        notify=_section(NotifySettings, raw.get("notify"), "notify"),
        tickets=_section(TicketSettings, raw.get("tickets"), "tickets"),
        daemon=_section(DaemonSettings, raw.get("daemon"), "daemon"),
        web=_section(WebSettings, raw.get("web"), "web"),
        mcr=_section(McrSettings, raw.get("mcr"), "mcr"),
        feeds=_section(FeedSettings, raw.get("feeds"), "feeds"),
        config_path=config_path,
    )


def load_settings(config_path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Settings:
    """Build settings from an optional TOML file and ``WATCHER_*`` variables of ``environ``."""
    path = config_path or environ.get("WATCHER_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    settings = settings_from_mapping(raw, str(path) if path else None)
    return apply_environment(settings, environ)


def apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Apply the ``WATCHER_*`` overrides that containers set."""
    if environ.get("WATCHER_DATABASE_URL"):
        settings = replace(settings, database_url=environ["WATCHER_DATABASE_URL"])
    if environ.get("WATCHER_NOTIFY_URLS"):
        extra = tuple(u for u in environ["WATCHER_NOTIFY_URLS"].split() if u)
        settings = replace(settings, notify=replace(settings.notify, urls=settings.notify.urls + extra))
    if environ.get("WATCHER_SOURCE_URL"):
        settings = replace(settings, fetch=replace(settings.fetch, source_url=environ["WATCHER_SOURCE_URL"]))
    if environ.get("WATCHER_PROXY"):
        settings = replace(settings, fetch=replace(settings.fetch, proxy=environ["WATCHER_PROXY"]))
    if environ.get("WATCHER_CLOUDS"):
        clouds = tuple(check_cloud(c) for c in environ["WATCHER_CLOUDS"].replace(",", " ").split())
        settings = replace(settings, clouds=clouds)
    if environ.get("WATCHER_SCHEDULE"):
        settings = replace(settings, daemon=replace(settings.daemon, schedule=environ["WATCHER_SCHEDULE"]))
    if environ.get("WATCHER_HTTP_PORT"):
        try:
            port = int(environ["WATCHER_HTTP_PORT"])
        except ValueError:
            raise ConfigError("WATCHER_HTTP_PORT must be a port number") from None
        _check_range("http_port", port, "WATCHER_HTTP_PORT")
        settings = replace(settings, daemon=replace(settings.daemon, http_port=port))
    if environ.get("WATCHER_HTTP_HOST"):
        settings = replace(settings, web=replace(settings.web, http_host=environ["WATCHER_HTTP_HOST"]))
    if environ.get("WATCHER_FEEDS_CLOCK_FILE"):  # tests move the feeds' clock without restarting a server
        settings = replace(settings, feeds=replace(settings.feeds, clock_file=environ["WATCHER_FEEDS_CLOCK_FILE"]))
    return settings

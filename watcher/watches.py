"""Watches: from the registries users think in to the service tags that serve them.

A registry reached from behind a firewall needs HTTPS (TCP 443) to its REST
endpoint (tag ``AzureContainerRegistry.<Region>``) and to its data endpoint
(blob storage, tag ``Storage.<Region>``) in every region it is replicated to.

ARM location names (``eastus2``) are matched to the tag's suffix, case-
insensitively and exactly: never to the tag's ``region`` property (which says
``germanywc`` for ``Storage.GermanyWestCentral`` and ``eastus2`` for
``Storage.EastUS2Stage``), and never by prefix (``Storage`` is not
``StorageSyncService``). Pure: the caller passes the tag names that exist.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable

from .settings import RegistryWatch, Settings

REGISTRY_SERVICE = "AzureContainerRegistry"
STORAGE_SERVICE = "Storage"
MCR_SERVICE = "MicrosoftContainerRegistry"
#: Microsoft's MCR firewall guidance names both tags for ``*.data.mcr.microsoft.com``.
MCR_FRONT_DOOR = "AzureFrontDoor.FirstParty"
MCR_WATCH = "mcr"
MCR_ENDPOINTS = ("mcr.microsoft.com", "*.data.mcr.microsoft.com")
EXTRA_WATCH = "(extra tags)"
#: cloud -> (registry DNS suffix, blob storage DNS suffix)
CLOUD_SUFFIXES = {
    "public": ("azurecr.io", "blob.core.windows.net"),
    "usgov": ("azurecr.us", "blob.core.usgovcloudapi.net"),
    "china": ("azurecr.cn", "blob.core.chinacloudapi.cn"),
    "germany": ("azurecr.de", "blob.core.cloudapi.de"),
}
STORAGE_WARNING = (
    "Allowing Storage.<Region> opens every storage account of that region, not only the registry's; "
    "dedicated data endpoints (<registry>.<region>.data.<suffix>) narrow what the registry itself needs."
)


@dataclass(frozen=True)
class WatchedTag:
    tag: str
    role: str          # "registry", "data", "mcr" or "extra"
    region: str | None  # the ARM location it serves, for regional tags
    endpoints: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "role": self.role, "region": self.region, "endpoints": list(self.endpoints)}


@dataclass(frozen=True)
class ResolvedWatch:
    name: str          # the registry name, or EXTRA_WATCH
    cloud: str
    regions: tuple[str, ...]
    data_endpoint: bool
    tags: tuple[WatchedTag, ...]
    warnings: tuple[str, ...]

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]

    @property
    def is_registry(self) -> bool:
        return self.name not in (EXTRA_WATCH, MCR_WATCH)

    @property
    def login_server(self) -> str | None:
        return f"{self.name}.{registry_suffix(self.cloud)}" if self.is_registry else None

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.name,
            "login_server": self.login_server,
            "cloud": self.cloud,
            "regions": list(self.regions),
            "data_endpoint": self.data_endpoint,
            "tags": [t.to_json() for t in self.tags],
            "warnings": list(self.warnings),
        }


def registry_suffix(cloud: str) -> str:
    return CLOUD_SUFFIXES.get(cloud, CLOUD_SUFFIXES["public"])[0]


def regional_tag(service: str, region: str, names_by_lower: dict[str, str]) -> str | None:
    """``<service>.<Suffix>`` whose suffix equals the ARM location, ignoring case."""
    return names_by_lower.get(f"{service}.{region}".lower())


def data_endpoints(registry: RegistryWatch, region: str) -> tuple[str, ...]:
    suffix, blob = CLOUD_SUFFIXES.get(registry.cloud, CLOUD_SUFFIXES["public"])
    if registry.data_endpoint:
        return (f"{registry.name}.{region}.data.{suffix}",)
    # Without dedicated data endpoints, layers come from the registry's storage
    # accounts, whose names Azure does not disclose.
    return (f"*.{blob}",)


def registry_endpoints(registry: RegistryWatch, region: str) -> tuple[str, ...]:
    """The login server, and for a geo-replicated registry its regional endpoint in ``region``."""
    suffix = registry_suffix(registry.cloud)
    login = f"{registry.name}.{suffix}"
    if len(registry.regions) > 1:
        return (login, f"{registry.name}.{region}.geo.{suffix}")
    return (login,)


def resolve_registry(registry: RegistryWatch, tag_names: Iterable[str]) -> ResolvedWatch:
    names = list(tag_names)
    by_lower = {n.lower(): n for n in names}
    tags: list[WatchedTag] = []
    warnings: list[str] = []
    for region in registry.regions:
        for service, role in ((REGISTRY_SERVICE, "registry"), (STORAGE_SERVICE, "data")):
            found = regional_tag(service, region, by_lower)
            if found is None:
                warnings.append(
                    f"{registry.name}: no tag {service}.<{region}> in the latest publication "
                    f"(check the region name; ARM location names look like 'eastus2')"
                )
                continue
            endpoints = registry_endpoints(registry, region) if role == "registry" else data_endpoints(registry, region)
            tags.append(WatchedTag(found, role, region, endpoints))
    tags.extend(_extra(registry.extra_tags, names, registry.name, warnings))
    return ResolvedWatch(
        name=registry.name, cloud=registry.cloud, regions=registry.regions,
        data_endpoint=registry.data_endpoint, tags=tuple(_unique(tags)), warnings=tuple(warnings),
    )


def _extra(patterns: Iterable[str], names: list[str], owner: str, warnings: list[str]) -> list[WatchedTag]:
    """Explicit tag names or shell-style patterns (``Storage.Germany*``), case-insensitive."""
    found: list[WatchedTag] = []
    by_lower = {n.lower(): n for n in names}
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = sorted(n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower()))
        else:
            matches = [by_lower[pattern.lower()]] if pattern.lower() in by_lower else []
        if not matches:
            warnings.append(f"{owner}: no tag matches {pattern!r} in the latest publication")
        found.extend(WatchedTag(m, "extra", None, ()) for m in matches)
    return found


def _unique(tags: list[WatchedTag]) -> list[WatchedTag]:
    seen: set[str] = set()
    result = []
    for tag in tags:
        if tag.tag not in seen:
            seen.add(tag.tag)
            result.append(tag)
    return result


def resolve_mcr(cloud: str, tag_names: Iterable[str]) -> ResolvedWatch:
    """The ``mcr`` watch of one cloud: MicrosoftContainerRegistry and AzureFrontDoor.FirstParty."""
    by_lower = {n.lower(): n for n in tag_names}
    warnings: list[str] = []
    wanted = (MCR_SERVICE, MCR_FRONT_DOOR)
    if cloud != "public":
        # Microsoft's MCR guidance is for the public cloud; elsewhere say so rather than guess.
        warnings.append(f"{MCR_WATCH}: Microsoft publishes no MCR firewall guidance for the {cloud} cloud; "
                        f"only {MCR_SERVICE} is watched, if published")
        wanted = (MCR_SERVICE,)
    tags = []
    for service in wanted:
        found = by_lower.get(service.lower())
        if found is None:
            warnings.append(f"{MCR_WATCH}: no tag {service} in the latest {cloud} publication")
            continue
        tags.append(WatchedTag(found, "mcr", None, MCR_ENDPOINTS))
    return ResolvedWatch(MCR_WATCH, cloud, (), False, tuple(tags), tuple(warnings))


def resolve_watches(settings: Settings, tag_names_by_cloud: dict[str, list[str]]) -> list[ResolvedWatch]:
    """Every configured watch, resolved against the tags of its cloud's latest publication."""
    resolved = [resolve_registry(r, tag_names_by_cloud.get(r.cloud, [])) for r in settings.registries]
    if settings.mcr.enabled:
        resolved.extend(resolve_mcr(cloud, tag_names_by_cloud.get(cloud, [])) for cloud in settings.clouds)
    if settings.extra_tags:
        for cloud in settings.clouds:
            warnings: list[str] = []
            tags = _extra(settings.extra_tags, tag_names_by_cloud.get(cloud, []), EXTRA_WATCH, warnings)
            resolved.append(ResolvedWatch(EXTRA_WATCH, cloud, (), False, tuple(_unique(tags)), tuple(warnings)))
    return resolved


def watched_tags(settings: Settings, cloud: str, tag_names: list[str]) -> tuple[list[str], list[str]]:
    """The tags of ``cloud`` that the configured watches name, once each, and the watches' warnings."""
    watches = [w for w in resolve_watches(settings, {cloud: tag_names}) if w.cloud == cloud]
    tags = list(dict.fromkeys(t for w in watches for t in w.tag_names))
    return tags, [warning for w in watches for warning in w.warnings]

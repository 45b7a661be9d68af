import orjson

from tests.conftest import file_bytes, plain_name
from watcher.parse import parse_bytes
import pytest

from watcher.errors import ConfigError
from watcher.settings import McrSettings, RegistryWatch, Settings, settings_from_mapping
from watcher.watches import EXTRA_WATCH, resolve_mcr, resolve_registry, resolve_watches, watched_tags


def real_names(public_files):
    return parse_bytes(file_bytes(public_files[-1]), plain_name(public_files[-1])).tag_names


def test_arm_locations_resolve_to_regional_tags_by_suffix_not_region_property(public_files):
    names = real_names(public_files)
    watch = resolve_registry(RegistryWatch("contoso", ("eastus2", "germanywestcentral"), data_endpoint=True), names)
    assert watch.tag_names == [
        "AzureContainerRegistry.EastUS2", "Storage.EastUS2",
        "AzureContainerRegistry.GermanyWestCentral", "Storage.GermanyWestCentral",
    ]
    # Storage.EastUS2Stage also has region "eastus2", and Storage.GermanyWestCentral's region is "germanywc".
    assert "Storage.EastUS2Stage" in names and "Storage.EastUS2Stage" not in watch.tag_names
    assert watch.warnings == ()
    data = [t for t in watch.tags if t.role == "data"]
    assert data[0].endpoints == ("contoso.eastus2.data.azurecr.io",)
    # Geo-replicated: the login server, and the regional endpoint of each replica.
    assert watch.tags[0].endpoints == ("contoso.azurecr.io", "contoso.eastus2.geo.azurecr.io")


def test_region_property_names_do_not_match(public_files):
    watch = resolve_registry(RegistryWatch("contoso", ("germanywc",)), real_names(public_files))
    assert watch.tags == ()
    assert len(watch.warnings) == 2 and "germanywc" in watch.warnings[0]


def test_without_data_endpoint_the_storage_endpoint_is_named():
    watch = resolve_registry(RegistryWatch("c", ("westeurope",)), ["AzureContainerRegistry.WestEurope", "Storage.WestEurope"])
    assert watch.tags[1].endpoints == ("*.blob.core.windows.net",)


def test_no_bare_prefix_matching():
    names = ["StorageSyncService.WestEurope", "Storage.WestEurope", "AzureContainerRegistry.WestEurope"]
    watch = resolve_registry(RegistryWatch("c", ("westeurope",), extra_tags=("storage",)), names)
    assert "StorageSyncService.WestEurope" not in watch.tag_names
    assert watch.warnings == ("c: no tag matches 'storage' in the latest publication",)


def test_extra_tags_and_patterns_and_mcr_as_a_watch_of_its_own():
    names = ["MicrosoftContainerRegistry", "AzureFrontDoor.FirstParty", "Storage.GermanyNorth",
             "Storage.GermanyWestCentral", "Sql"]
    settings = Settings(
        registries=(RegistryWatch("c", ("germanynorth",), extra_tags=("Storage.Germany*",)),
                    RegistryWatch("d", ("germanynorth",))),
        extra_tags=("sql",), mcr=McrSettings(enabled=True),
    )
    registry, second, mcr, extra = resolve_watches(settings, {"public": names})
    assert registry.tag_names == ["Storage.GermanyNorth", "Storage.GermanyWestCentral"]
    # One MCR watch, whatever the number of registries, with both tags of Microsoft's MCR guidance.
    assert (mcr.name, mcr.tag_names) == ("mcr", ["MicrosoftContainerRegistry", "AzureFrontDoor.FirstParty"])
    assert mcr.tags[0].endpoints == ("mcr.microsoft.com", "*.data.mcr.microsoft.com")
    assert mcr.login_server is None and not mcr.is_registry
    assert (extra.name, extra.tag_names) == (EXTRA_WATCH, ["Sql"])


def test_watched_tags_of_a_cloud_once_each_with_the_warnings(public_files):
    names = real_names(public_files)
    settings = Settings(registries=(RegistryWatch("a", ("eastus2",)), RegistryWatch("b", ("eastus2", "germanywc"))))
    tags, warnings = watched_tags(settings, "public", names)
    assert tags == ["AzureContainerRegistry.EastUS2", "Storage.EastUS2"]
    assert len(warnings) == 2 and all("germanywc" in w for w in warnings)
    assert watched_tags(settings, "china", []) == ([], [])


def test_a_resolved_watch_to_json_is_plain_data(public_files):
    watch = resolve_registry(RegistryWatch("contoso", ("eastus2",), data_endpoint=True), real_names(public_files))
    data = watch.to_json()
    assert data["registry"] == "contoso" and data["login_server"] == "contoso.azurecr.io"
    assert data["tags"][0] == {"tag": "AzureContainerRegistry.EastUS2", "role": "registry", "region": "eastus2",
                               "endpoints": ["contoso.azurecr.io"]}
    assert orjson.loads(orjson.dumps(data)) == data


def test_endpoints_use_the_clouds_own_suffix_and_mcr_elsewhere_says_there_is_no_guidance():
    names = ["AzureContainerRegistry.USGovVirginia", "Storage.USGovVirginia", "MicrosoftContainerRegistry"]
    watch = resolve_registry(RegistryWatch("gov", ("usgovvirginia",), data_endpoint=True, cloud="usgov"), names)
    assert watch.login_server == "gov.azurecr.us"
    assert [t.endpoints for t in watch.tags] == [("gov.azurecr.us",), ("gov.usgovvirginia.data.azurecr.us",)]
    china = resolve_registry(RegistryWatch("cn", ("chinanorth3",), cloud="china"),
                             ["AzureContainerRegistry.ChinaNorth3", "Storage.ChinaNorth3"])
    assert china.login_server == "cn.azurecr.cn" and china.tags[1].endpoints == ("*.blob.core.chinacloudapi.cn",)
    mcr = resolve_mcr("usgov", names)
    assert mcr.tag_names == ["MicrosoftContainerRegistry"]
    assert "no MCR firewall guidance for the usgov cloud" in mcr.warnings[0]


def test_include_mcr_is_replaced_by_the_mcr_section():
    with pytest.raises(ConfigError, match=r"\[mcr\] enabled = true"):
        settings_from_mapping({"registries": [{"name": "contoso", "regions": ["eastus2"], "include_mcr": True}]})
    assert settings_from_mapping({"mcr": {"enabled": True}}).mcr.enabled

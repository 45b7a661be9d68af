import pytest

from watcher.errors import ConfigError
from watcher.settings import load_settings


def write(tmp_path, text):
    path = tmp_path / "watcher.toml"
    path.write_text(text)
    return path


def test_config_file_and_environment(tmp_path):
    path = write(tmp_path, """
database_url = "sqlite:///x.db"
clouds = ["public", "usgov"]
tags = ["Sql.WestEurope"]
[[registries]]
name = "Contoso.azurecr.io"
regions = ["East US 2", "germanywestcentral"]
data_endpoint = true
[fetch]
deadline_seconds = 60
allowed_hosts = ["download.microsoft.com"]
""")
    settings = load_settings(path, {"WATCHER_DATABASE_URL": "postgresql://db/w", "WATCHER_NOTIFY_URLS": "json://a json://b"})
    assert settings.database_url == "postgresql://db/w"
    assert settings.clouds == ("public", "usgov")
    (registry,) = settings.registries
    assert (registry.name, registry.regions, registry.data_endpoint) == ("contoso", ("eastus2", "germanywestcentral"), True)
    assert registry.login_server == "contoso.azurecr.io"
    assert settings.fetch.deadline_seconds == 60 and settings.fetch.allowed_hosts == ("download.microsoft.com",)
    assert settings.notify.urls == ("json://a", "json://b")
    assert settings.extra_tags == ("Sql.WestEurope",)


def test_config_from_environment_variable(tmp_path):
    path = write(tmp_path, 'clouds = ["china"]\n')
    assert load_settings(None, {"WATCHER_CONFIG": str(path)}).clouds == ("china",)


@pytest.mark.parametrize("text, message", [
    ("clouds = [\"mars\"]", "unknown cloud 'mars'"),
    ("colour = 1", "config has unknown keys: colour"),
    ("[[registries]]\nregions = [\"eastus\"]", r"registries\[0\].name is required"),
    ("[[registries]]\nname = \"a\"", r"registries\[0\].regions must name at least one region"),
    ("[[registries]]\nname = \"a-b\"\nregions = [\"x\"]", "is not a registry name"),
    ("[fetch]\nspeed = 1", r"\[fetch\] has unknown keys: speed"),
    ("clouds = [", "is not valid TOML"),
    ('[fetch]\ntimeout_seconds = "abc"', "fetch.timeout_seconds must be a number, not 'abc'"),
    ('[daemon]\nstale_after_days = "x"', "daemon.stale_after_days must be a whole number"),
    ("[tickets]\ntemplate_dir = 5", "tickets.template_dir must be a string"),
    ("[fetch]\nretries = -1", "fetch.retries must be from 0 to 100, not -1"),
    ("[fetch]\ndeadline_seconds = 0", "fetch.deadline_seconds must be more than 0"),
    ("[daemon]\nhttp_port = 70000", "daemon.http_port must be from 1 to 65535"),
    ("[tickets]\nremoval_hold_ratio = 1.5", "tickets.removal_hold_ratio must be from 0 to 1.0"),
    ("[fetch]\ndeadline_seconds = nan", "fetch.deadline_seconds must be a finite number, not nan"),
    ("[fetch]\ntimeout_seconds = inf", "fetch.timeout_seconds must be a finite number, not inf"),
    ("[fetch]\nmin_tag_ratio = -nan", "fetch.min_tag_ratio must be a finite number"),
    ("[tickets]\nremoval_hold_ratio = nan", "tickets.removal_hold_ratio must be a finite number"),
    ("[daemon]\nrun_deadline_seconds = -inf", "daemon.run_deadline_seconds must be a finite number"),
    ("[fetch]\ndeadline_seconds = 1e300", "fetch.deadline_seconds must be more than 0 and at most 86400"),
    ("[fetch]\nmax_bytes = 10000000000000", "fetch.max_bytes must be more than 0 and at most 1073741824"),
    ("[fetch]\nretries = 1000000", "fetch.retries must be from 0 to 100"),
    ("[notify]\nmax_attempts = 99999999999", "notify.max_attempts must be from 1 to 1000"),
    ("[daemon]\nstale_after_days = 100000", "daemon.stale_after_days must be from 1 to 3650"),
    ("[tickets]\nmin_prefix_length_v4 = 33", "tickets.min_prefix_length_v4 must be from 0 to 32"),
    ("[tickets]\nmin_prefix_length_v6 = 129", "tickets.min_prefix_length_v6 must be from 0 to 128"),
    ("[tickets]\nmax_withdrawn_share = 2", "tickets.max_withdrawn_share must be from 0 to 1.0"),
    ('[[registries]]\nname = "a"\nregions = ["x"]\ndata_endpoint = "false"', "data_endpoint must be true or false"),
    ('[[registries]]\nname = "contoso"\nregions = ["eastus"]\n[[registries]]\nname = "Contoso.azurecr.io"\n'
     'regions = ["westus"]', r"registries\[1\]: registry 'contoso' is already configured in registries\[0\]"),
    ('[[registries]]\nname = "a"\nregions = ["x"]\nfirewalls = ["nftables", "pf"]',
     r"registries\[0\].firewalls: unknown firewall kind 'pf' \(choose from nftables, iptables"),
    ('[[registries]]\nname = "a"\nregions = ["x"]\nfirewalls = [1]', r"registries\[0\].firewalls must be a list of strings"),
    ('[mcr]\nfirewalls = ["checkpoint"]', "mcr.firewalls: unknown firewall kind 'checkpoint'"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), {})


def test_firewall_kinds_per_registry_and_for_mcr(tmp_path):
    path = write(tmp_path, """
[[registries]]
name = "contoso"
regions = ["eastus2"]
firewalls = ["nftables", "paloalto", "nftables"]
[[registries]]
name = "fabrikam"
regions = ["westus"]
[mcr]
enabled = true
firewalls = ["fortigate"]
""")
    settings = load_settings(path, {})
    assert [r.firewalls for r in settings.registries] == [("nftables", "paloalto"), ()]  # once each, in order
    assert settings.mcr.firewalls == ("fortigate",)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", {})


def test_the_web_section_and_its_host_override() -> None:
    import re

    from watcher.settings import load_settings, settings_from_mapping

    web = settings_from_mapping({"web": {"http_host": "::", "http_port": 8443, "read_timeout_seconds": 2}}).web
    assert (web.http_host, web.http_port, web.read_timeout_seconds, web.max_connections) == ("::", 8443, 2.0, 100)
    assert load_settings(None, {}).web.http_host == "127.0.0.1"  # loopback by default
    assert load_settings(None, {"WATCHER_HTTP_HOST": "0.0.0.0"}).web.http_host == "0.0.0.0"
    for bad, message in (({"max_connections": 0}, "web.max_connections must be at least 1"),
                         ({"idle_timeout_seconds": 0}, "web.idle_timeout_seconds must be more than 0"),
                         ({"port": 1}, "[web] has unknown keys: port")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings_from_mapping({"web": bad})

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
    ("[fetch]\nretries = -1", "fetch.retries must be at least 0"),
    ("[fetch]\ndeadline_seconds = 0", "fetch.deadline_seconds must be more than 0"),
    ("[daemon]\nhttp_port = 70000", "daemon.http_port must be from 1 to 65535"),
    ("[tickets]\nremoval_hold_ratio = 1.5", "tickets.removal_hold_ratio must be from 0 to 1.0"),
    ('[[registries]]\nname = "a"\nregions = ["x"]\ndata_endpoint = "false"', "data_endpoint must be true or false"),
    ('[[registries]]\nname = "contoso"\nregions = ["eastus"]\n[[registries]]\nname = "Contoso.azurecr.io"\n'
     'regions = ["westus"]', r"registries\[1\]: registry 'contoso' is already configured in registries\[0\]"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), {})


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

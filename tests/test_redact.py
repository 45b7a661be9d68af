"""Redaction: one set of rules for fetch, logs and notifications, the strictest of the three."""
from __future__ import annotations

import logging

from watcher import fetch, logs, notify
from watcher.redact import MASK, RedactingFilter, ordered_secrets, redact_text, redact_url


def test_redact_url_masks_userinfo_and_query_values() -> None:
    assert redact_url("https://bob:s3cret@mirror.corp/tags/x.json?sig=abc&se=2025&id=56519#frag") == (
        "https://***@mirror.corp/tags/x.json?sig=***&se=***&id=56519"
    )
    assert redact_url("https://www.microsoft.com/en-us/download/details.aspx?id=56519") == (
        "https://www.microsoft.com/en-us/download/details.aspx?id=56519"
    )
    assert redact_url("/var/lib/watcher/tags") == "/var/lib/watcher/tags"
    assert redact_url("http://[::1/broken") == "<unparseable URL>"


def test_every_query_value_is_masked_whatever_its_key_is_called() -> None:
    # The logs' old rule masked only token-like keys: an Azure SAS "sv"/"st" or a custom "auth" leaked.
    text = redact_text("GET https://x.blob.core.windows.net/f.json?sv=2024&auth=Hunter22&flag failed")
    assert text == "GET https://x.blob.core.windows.net/f.json?sv=***&auth=***&*** failed"


def test_userinfo_in_any_scheme_is_masked() -> None:
    for url in ("mailto://bob:Pa55w0rd@smtp.local", "json://user:Pa55w0rd@hooks.local/x",
                "postgresql://watcher:Pa55w0rd@db/x"):
        text = redact_text(f"cannot reach {url}: refused")
        assert "Pa55w0rd" not in text and "bob" not in text and "***@" in text, text


def test_token_like_pairs_outside_a_url_are_masked() -> None:
    assert redact_text("retrying ?token=abc123&page=2") == "retrying ?token=***&page=2"
    assert redact_text("exit code=1 for key id") == "exit code=1 for key id"  # plain words stay


def test_known_secrets_are_masked_quoted_or_not_longest_first() -> None:
    secret = "s3cr/t+value"
    text = redact_text(f"hook {secret} and s3cr%2Ft%2Bvalue and the prefix s3cr", [secret, "s3cr"])
    assert secret not in text and "s3cr%2Ft%2Bvalue" not in text and "s3cr" not in text
    assert text.count(MASK) == 3
    assert ordered_secrets(["ab", "", "abcd", "abc"])[:2] == ("abcd", "abc")  # two characters would mask words
    assert "ab" not in ordered_secrets(["ab"])


def test_the_callers_share_the_rules() -> None:
    # fetch's and the logs' names are the redaction module's, and a destination masks with the same rules.
    assert fetch.redact_url is redact_url and fetch.redact_text is redact_text
    assert logs.RedactingFilter is RedactingFilter
    [destination] = notify.destinations(_settings("json://user:Pa55word9@127.0.0.1:9/hook?token=t0kenValue"))
    said = destination.redact("apprise: posting to json://user:Pa55word9@127.0.0.1:9/hook?token=t0kenValue")
    assert "Pa55word9" not in said and "t0kenValue" not in said


def test_the_filter_masks_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "GET %s %s", ("https://h/x?sig=abc", "Zq9tok"),
                               None)
    try:
        raise RuntimeError("boom Zq9tok")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter(["Zq9tok"]).filter(record)
    assert record.getMessage() == "GET https://h/x?sig=*** ***"
    assert "Zq9tok" not in record.exc_text and "boom ***" in record.exc_text and record.exc_info is None


def _settings(url: str):
    from watcher.settings import NotifySettings, Settings

    return Settings(notify=NotifySettings(urls=(url,)))


def test_the_example_config_s_teams_destination_is_a_power_automate_workflow_with_its_parts_masked() -> None:
    import re

    from watcher import config

    [teams] = re.findall(r'"(workflows://[^"]+)"', config.example_config())
    assert "msteams://" not in config.example_config().replace("msteams:// targets", "")
    real = teams.replace("WORKFLOW_ID", "8f2c1a6e9b0d4c7e").replace("SIGNATURE", "Sig0123456789abcdef")
    [destination] = notify.destinations(_settings(real))
    assert destination.valid and destination.scheme == "workflows"
    assert "Sig0123456789abcdef" not in destination.label and "Sig0123456789abcdef" in destination.secrets
    assert "workflows" not in destination.secrets  # the scheme is no secret: "workflows" stays readable in logs

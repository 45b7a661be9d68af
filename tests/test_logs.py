"""Logs: one line per event, human or JSON, and never a secret — whoever logged it."""
from __future__ import annotations

import io
import json
import logging

import pytest
from click.testing import CliRunner

from tests.httpstub import free_port
from watcher import config, logs
from watcher.cli import main
from watcher.settings import FetchSettings, NotifySettings, Settings

TOKEN = "Zq9tokenValue77"
PASSWORD = "dbPa55word!x"


@pytest.fixture
def stream():
    buffer = io.StringIO()
    yield buffer
    logs.remove_handler()


def test_secrets_are_masked_in_messages_arguments_and_tracebacks(stream: io.StringIO) -> None:
    logs.configure_logging("human", logging.INFO, secrets=[TOKEN], stream=stream)
    log = logging.getLogger("some.library")
    log.info("posting to %s", f"https://hooks.example.com/services/{TOKEN}")
    log.warning("proxy http://alice:%s@proxy.local:3128 refused", PASSWORD)
    log.info("download https://x.blob.core.windows.net/f.json?sv=2024&sig=abcdef123456&se=1")
    try:
        raise RuntimeError(f"boom with {TOKEN}")
    except RuntimeError:
        log.exception("failed\nover two lines")
    text = stream.getvalue()
    assert TOKEN not in text and PASSWORD not in text and "abcdef123456" not in text
    assert "http://***@proxy.local:3128" in text and "sig=***" in text
    lines = text.splitlines()
    assert len(lines) == 4  # one line per event, the traceback folded into its line
    assert "over two lines" in lines[3] and "RuntimeError: boom with ***" in lines[3]


def test_json_lines_carry_the_event_fields(stream: io.StringIO) -> None:
    logs.configure_logging("json", logging.INFO, stream=stream)
    logging.getLogger("watcher.scheduler").info("run finished (%s): ok", "schedule",
                                                extra={"event": "run", "outcome": "ok"})
    logging.getLogger("watcher.x").debug("not shown at INFO")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "run finished (schedule): ok" and entry["event"] == "run" and entry["outcome"] == "ok"
    assert entry["level"] == "info" and entry["logger"] == "watcher.scheduler" and entry["time"].endswith("+00:00")


def test_configuring_twice_keeps_one_handler_and_leaves_others_alone(stream: io.StringIO) -> None:
    other = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(other)
    try:
        logs.configure_logging("human", stream=stream)
        logs.configure_logging("json", stream=stream)
        ours = [h for h in root.handlers if getattr(h, "_watcher_handler", False)]
        assert len(ours) == 1 and other in root.handlers
    finally:
        root.removeHandler(other)


def test_the_settings_secrets_are_what_the_logs_mask() -> None:
    settings = Settings(
        database_url=f"postgresql://watcher:{PASSWORD}@db.local/watcher",
        fetch=FetchSettings(source_url=f"https://mirror.local/tags/?token={TOKEN}", proxy="http://bob:Pr0xyPass@p:3128"),
        notify=NotifySettings(urls=(f"json://user:{TOKEN}x@hooks.local/x", "msteams://TokenAaa1/TokenBbb2/TokenCcc3/")),
    )
    found = config.secrets(settings)
    for secret in (PASSWORD, TOKEN, "Pr0xyPass", f"{TOKEN}x", "TokenBbb2"):
        assert secret in found, secret


def test_cli_output_and_logs_mask_the_configured_secrets(tmp_path) -> None:
    closed = free_port()  # nothing listens there: the test message fails, and says so without the token
    result = CliRunner().invoke(
        main, ["--log-format", "json", "-v", "notify", "test"],
        env={"WATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WATCHER_CONFIG": None,
             "WATCHER_NOTIFY_URLS": f"json://user:{TOKEN}@127.0.0.1:{closed}/hook"},
    )
    assert result.exit_code == 1
    assert "FAILED" in result.output and f"127.0.0.1:{closed}" in result.output
    assert TOKEN not in result.output + result.stderr

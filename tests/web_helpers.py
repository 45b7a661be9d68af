"""Shared by the web tests: a desk with tickets in every live state, users of each role, the CLI's --json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from tests.ticket_helpers import import_made, quietly, week
from watcher import review, users
from watcher.cli import main
from watcher.settings import Settings, load_settings

CONFIG = """clouds = ["public"]
[[registries]]
name = "east"
regions = ["eastus2"]

[[registries]]
name = "west"
regions = ["westus"]

[daemon]
schedule = "0 3 * * *"
"""
#: The made-up weeks use private space, which a real publication never holds.
PRIVATE_SPACE_ALLOWED = 'bogon_exemptions = ["10.0.0.0/8"]\n'
PASSWORD = "correct horse battery"


@dataclass
class Desk:
    db_url: str
    config: Path
    settings: Settings
    engine: sa.Engine
    tokens: dict[str, str]

    def cli(self, *args: str, stdin: str | None = None, raw: bool = False) -> Any:
        """``watcher ARGS`` in-process, as the user would run it; the parsed JSON when --json is among ARGS (the
        text as printed with ``raw``)."""
        env = {"WATCHER_DATABASE_URL": self.db_url, "WATCHER_CONFIG": str(self.config), "WATCHER_CLOUDS": None,
               "WATCHER_SOURCE_URL": None, "WATCHER_PROXY": None, "WATCHER_NOTIFY_URLS": None}
        result = CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args and not raw else result.stdout


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "watcher.toml"
    if "[tickets]\n" in extra:
        extra = extra.replace("[tickets]\n", "[tickets]\n" + PRIVATE_SPACE_ALLOWED, 1)
    else:
        extra += "\n[tickets]\n" + PRIVATE_SPACE_ALLOWED
    path.write_text(CONFIG + extra)
    return path


def make_desk(db_url: str, engine: sa.Engine, tmp_path: Path, extra_config: str = "",
              more_tags: dict[str, list[str]] | None = None) -> Desk:
    """Two watches: east with an open change ticket (3), west with a held one (4); users alice and bob
    (approvers), vera (viewer), root (admin); a bearer token for each."""
    config = write_config(tmp_path, extra_config)
    settings = load_settings(config, {})
    more = dict(more_tags or {})
    import_made(engine, quietly(settings), "20250101", {**week(), **more})
    for baseline in (1, 2):
        review.transition(engine, baseline, "approve", "setup")
    import_made(engine, quietly(settings), "20250108",
                week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.9.0/24"),
                     storage_westus=()) | more, 2)
    tokens = {}
    for name, role in (("alice", "approver"), ("bob", "approver"), ("vera", "viewer"), ("root", "admin")):
        users.add_user(engine, name, role, PASSWORD)
        tokens[name] = users.new_token(engine, name)
    return Desk(db_url, config, settings, engine, tokens)

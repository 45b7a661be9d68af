"""The command line, through click's CliRunner, on SQLite and PostgreSQL."""
import json

import click
import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from watcher.cli import main


@pytest.fixture
def run(db_url, tmp_path):
    config = tmp_path / "watcher.toml"
    config.write_text('[[registries]]\nname = "contoso"\nregions = ["eastus2", "germanywestcentral"]\ndata_endpoint = true\n')
    runner = CliRunner()

    def invoke(*args, expect=0):
        result = runner.invoke(main, ["--db", db_url, "--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == expect, result.output + result.stderr
        return result

    return invoke


@pytest.fixture
def imported(run, public_files):
    run("import", *map(str, public_files[-3:]))
    return run


def test_import_folder_then_again(run, servicetags_dir):
    first = run("import", str(servicetags_dir / "usgov"), str(servicetags_dir / "china"))
    assert first.output.count("imported 299 tags") == 2 and "china 2026-07-20" in first.output
    again = run("import", "--json", str(servicetags_dir / "usgov"))
    assert [r["outcome"] for r in json.loads(again.output)] == ["already imported"] * 2


def test_import_takes_a_relative_path_as_the_readme_shows(run, servicetags_dir, monkeypatch):
    monkeypatch.chdir(servicetags_dir.parent)  # as `watcher import ../shared/servicetags/public` from the checkout
    result = run("import", "--json", "servicetags/china")
    assert [r["outcome"] for r in json.loads(result.stdout)] == ["imported"] * 2


def test_a_failing_file_is_reported_and_the_others_go_on(run, servicetags_dir, tmp_path):
    bad = tmp_path / "ServiceTags_Public_20251020.json"  # between the two good files
    bad.write_text('{"changeNumber": 1, "cloud": "Public", "values": [{"name": "A"}]}')
    good = [servicetags_dir / "public" / f"ServiceTags_Public_{d}.json.gz" for d in ("20251028", "20251013")]
    result = run("import", "--json", str(good[0]), str(bad), str(good[1]), expect=1)
    out = json.loads(result.stdout)
    assert [(r["date"], r["outcome"]) for r in out] == [
        ("2025-10-13", "imported"), ("2025-10-20", "failed"), ("2025-10-28", "imported")]
    assert out[1]["file"] == str(bad) and "tag 'A'" in out[1]["error"] and out[0]["error"] is None
    assert "1 failed: " + str(bad) in result.stderr
    text = run("import", str(good[0]), str(bad), str(good[1]), expect=1)
    assert text.stdout.count("already imported") == 2 and "failed" in text.stderr


def test_publications(imported):
    out = json.loads(imported("publications", "--json").output)
    assert [p["date"] for p in out] == ["2025-10-06", "2025-10-13", "2025-10-28"]
    assert imported("publications", "--cloud", "usgov").output.startswith("no usgov publications")


def test_diff_of_watched_tags_json_contract(imported):
    out = json.loads(imported("diff", "--json").output)
    by_tag = {d["tag"]: d for d in out}
    assert set(by_tag) == {"AzureContainerRegistry.EastUS2", "Storage.EastUS2",
                           "AzureContainerRegistry.GermanyWestCentral", "Storage.GermanyWestCentral"}
    change = by_tag["Storage.EastUS2"]
    assert set(change) >= {"tag", "status", "added", "removed", "net_added", "net_removed", "anomalies", "from", "to"}
    assert change["status"] == "changed"
    assert change["added"] == sorted(change["added"]) == ["135.130.158.0/23", "2603:1030:40f::/49"]
    assert change["removed"] == ["2603:1030:40f::/48"]
    assert change["net_removed"] == ["2603:1030:40f:8000::/49"]
    assert change["from"] == {"date": "2025-10-13", "change_number": 44, "file_change_number": 373, "resolved_from": None}
    assert change["to"]["date"] == "2025-10-28" and change["to"]["change_number"] == 45
    assert by_tag["AzureContainerRegistry.EastUS2"]["status"] == "unchanged"


def test_diff_named_tags_all_and_dates(imported):
    text = imported("diff", "Storage.EastUS2", "--from", "2025-10-13", "--to", "latest").output
    assert "+ 135.130.158.0/23" in text and "net -2603:1030:40f:8000::/49" in text
    everything = json.loads(imported("diff", "--all", "--json", "--from", "20251006").output)
    assert len(everything) > 100 and all(d["status"] != "unchanged" or d["anomalies"] for d in everything)


def test_show_lookup_history_watches(imported):
    show = json.loads(imported("show", "Storage.EastUS2", "--at", "2025-10-13", "--json").output)
    assert show["tag"] == "Storage.EastUS2" and show["change_number"] == 44
    assert "2603:1030:40f::/48" in show["prefixes"] and show["date"] == "2025-10-13"
    hits = json.loads(imported("lookup", "2603:1030:40f:8000::1", "--json").output)
    assert "Storage.EastUS2" not in {h["tag"] for h in hits}
    hits = json.loads(imported("lookup", "2603:1030:40f:8000::1", "--at", "20251013", "--json").output)
    assert {"tag": "Storage.EastUS2", "prefix": "2603:1030:40f::/48", "since": "2025-10-06"} in hits
    history = json.loads(imported("history", "Storage.EastUS2", "--json").output)
    assert [(h["date"], h["change_number"], h["added"], h["removed"]) for h in history][-1] == ("2025-10-28", 45, 2, 1)
    watches = json.loads(imported("watches", "--json").output)
    assert watches[0]["login_server"] == "contoso.azurecr.io" and len(watches[0]["tags"]) == 4


def test_errors_are_one_line_exit_1_and_usage_is_exit_2(imported, tmp_path):
    for args in (["diff", "NoSuchTag"], ["show", "Storage.EastUS2", "--at", "1999-01-01"], ["lookup", "not-an-ip"]):
        result = imported(*args, expect=1)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    bad = tmp_path / "ServiceTags_Public_20251104.json"
    bad.write_text("<html>maintenance</html>")
    result = imported("import", str(bad), expect=1)
    assert "looks like HTML" in result.stderr
    assert imported("diff", "--cloud", "mars", expect=2).exit_code == 2
    assert imported("diff", "Storage.EastUS2", "--all", expect=2).exit_code == 2


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


def test_every_command_has_help_text():
    for path, command in _commands(main):
        assert command.help and len(command.help) > 15, path
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path


def test_every_option_has_help_text_and_json_is_one_shared_option():
    json_helps = set()
    for path, command in [((), main), *_commands(main)]:
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.name)
                if "--json" in param.opts:
                    json_helps.add(param.help)
    assert json_helps == {"Print JSON instead of text."}


def test_readme_mentions_every_top_level_command():
    readme = (REPO / "README.md").read_text()
    for name in main.commands:
        assert f"watcher {name}" in readme, name


def test_import_shows_a_progress_bar_on_a_terminal_and_none_when_piped(tmp_path, public_files):
    import os
    import pty
    import subprocess
    import sys

    files = [str(p) for p in public_files[:2]]

    def import_with(stderr, db):
        return subprocess.run([sys.executable, "-m", "watcher.cli", "--db", f"sqlite:///{tmp_path / db}", "import", *files],
                              stdout=subprocess.PIPE, stderr=stderr, cwd=REPO, timeout=120)

    primary, secondary = pty.openpty()
    try:
        done = import_with(secondary, "tty.db")
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0 and b"importing" in seen and b"2/2" in seen
    piped = import_with(subprocess.PIPE, "pipe.db")
    assert piped.returncode == 0 and b"importing" not in piped.stderr
    assert piped.stdout.count(b"imported") == done.stdout.count(b"imported") == 2

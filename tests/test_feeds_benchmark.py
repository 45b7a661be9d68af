"""The feeds benchmark runs end to end on a small load and writes its figures (no timing asserted here)."""
from __future__ import annotations

import json

from benchmarks.feeds import main


def test_feeds_benchmark_measures_both_servers_and_the_state_change(tmp_path, capsys):
    out = tmp_path / "feeds.json"
    code = main(["--seconds", "0.3", "--clients", "5", "--prefixes", "50", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert code == (0 if figures["pass"] else 1)
    assert figures["entries"] == 51
    for name in ("watcher_200", "nginx_200", "watcher_304", "nginx_304", "watcher_304_if_none_match"):
        assert figures[name]["per_second"] > 0, name
        assert set(figures[name]["statuses"]) == {"304" if "304" in name else "200"}, name
    assert figures["ratio_200"] > 0 and figures["ratio_304"] > 0
    assert 0 < figures["state_change_to_served_seconds"] < 10
    assert 0 < figures["state_change_to_export_seconds"] < 10
    assert json.loads(capsys.readouterr().out) == figures

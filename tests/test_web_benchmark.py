"""benchmarks/web.py runs end to end on a tiny input (3 synthetic weeks, 30 queue tickets) through both harnesses
(a ``watcher serve`` process, the headline, and the in-process TestClient) and writes its JSON (no timing
asserted: the figures are for the benchmark run itself)."""
from __future__ import annotations

import json

from benchmarks.web import main

PAGES = {"ticket", "ticket_first_view", "tag", "tag_first_view", "tag_first_view_of_database",
         "tag_without_javascript", "tag_without_javascript_first_view", "queue", "request_floor"}


def test_the_web_benchmark_measures_every_page_through_a_served_process(tmp_path, servicetags_dir, capsys) -> None:
    out = tmp_path / "web.json"
    code = main(["--backends", "sqlite", "--weeks", "3", "--repeat", "1", "--queue-weeks", "3",
                 "--harness", "served,testclient", "--data", str(servicetags_dir), "--out", str(out)])
    document = json.loads(out.read_text())
    assert code == (0 if document["pass"] else 1)
    assert document["queue_tickets"] == 30 and document["targets"] == {"ticket": 0.5, "tag": 0.5, "queue": 0.2}
    assert document["harness"].startswith("watcher serve process")
    assert set(document["sqlite"]) == PAGES and set(document["testclient"]["sqlite"]) == PAGES
    for figure in [*document["sqlite"].values(), *document["testclient"]["sqlite"].values()]:
        assert figure["n"] == 1 and figure["ratio_median"] > 0 and figure["bytes"] > 1000
    assert document["sqlite"]["tag"]["paths"][0] == "/tag?name=AzureCloud&cloud=public"
    assert set(document["first_views"]["sqlite"]) == {"ticket_first_view", "tag_first_view",
                                                       "tag_first_view_of_database"}
    assert json.loads(capsys.readouterr().out) == document

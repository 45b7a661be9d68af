"""The benchmark script runs end to end on a tiny input and writes well-formed JSON (no timing asserted)."""
from __future__ import annotations

import json
import re

import pytest

from benchmarks.runner import main

FIGURE_KEYS = {"id", "title", "backend", "unit", "value", "target", "target_op", "status", "note"}


def test_quick_run_writes_the_expected_json(tmp_path, servicetags_dir, capsys):
    out = tmp_path / "results" / "quick.json"
    code = main(["--quick", "--backends", "sqlite", "--files", "3", "--weeks", "6", "--repeat", "1",
                 "--data", str(servicetags_dir), "--workdir", str(tmp_path), "--out", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document) == {"meta", "figures", "growth", "synthetic"}
    assert document["meta"]["backends"] == ["sqlite"]
    assert len(document["meta"]["public_files"]) == 3
    figures = document["figures"]
    assert all(FIGURE_KEYS <= set(f) for f in figures)
    by_id = {(f["id"], f["backend"]): f for f in figures}
    for fid in ("1", "2", "3", "4a", "4b", "4c", "4e", "5", "6a", "6b", "6c", "7a", "7b", "8a", "8b", "10a", "10b"):
        figure = by_id[(fid, "sqlite")]
        assert figure["status"] in {"PASS", "FAIL", "INFO"}, figure
        assert set(figure["value"]) == {"median", "min", "max", "n"}
        assert figure["value"]["min"] <= figure["value"]["median"] <= figure["value"]["max"]
    tickets = by_id[("5", "sqlite")]
    assert tickets["status"] in {"PASS", "FAIL"} and tickets["target"] == 4.0, tickets
    assert set(tickets["value"]) == {"median", "min", "max", "n"}
    extra = tickets["extra"]
    assert extra["publication"] == "ServiceTags_Public_20251028.json" and extra["tickets"] >= 2
    assert extra["messages"] == extra["tickets"] * extra["destinations"]
    assert extra["renders"] == extra["tickets"] * len(extra["formats"])
    assert set(extra["render_seconds"]) == set(extra["deliver_seconds"]) == {"median", "min", "max", "n"}
    assert by_id[("7b", "sqlite")]["target"] == 120 * 1024 * 1024
    assert [row["date"] for row in document["growth"]["sqlite"]] == ["20250804", "20250811", "20250818"]
    assert len(document["synthetic"]["sqlite"]["weeks"]) == 6
    backfill = by_id[("10a", "sqlite")]
    assert backfill["target"] == 2.0 and backfill["extra"]["files"] == 18  # 6 weeks × 3 clouds
    assert by_id[("10b", "sqlite")]["extra"]["files"] == 6
    printed = capsys.readouterr().out
    assert "pending:" not in printed and "[5 sqlite]" in printed
    for fid in ("1", "2", "3", "4a", "4b", "4c", "4e", "5", "6a", "6b", "6c", "7a", "7b", "8a", "8b", "10a", "10b"):
        status = by_id[(fid, "sqlite")]["status"]  # each figure's table row ends with its result
        assert re.search(rf"^{re.escape(fid)} .* sqlite .* {status}$", printed, re.MULTILINE), (fid, printed)
    counts = {s: sum(1 for f in figures if f["status"] == s) for s in ("PASS", "FAIL")}
    assert f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, 0 pending;" in printed
    assert not list(tmp_path.glob("*.db*")), "scratch databases are removed"


def test_only_takes_known_figure_numbers():
    with pytest.raises(SystemExit, match="--only takes figure numbers"):
        main(["--only", "5,11"])

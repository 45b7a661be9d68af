"""Renderers escape for their target (hostile tag names and prefixes give no extra line, command or markup), and
templates run under limits (time, loop steps, widths): a breach is a RenderError naming the template."""
from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.ticket_helpers import import_made, make_settings, week
from watcher import diff as diffs
from watcher import notify, render, store, tickets
from watcher.cli import main
from watcher.errors import RenderError
from watcher.settings import NotifySettings, Settings, TicketSettings
from watcher.watches import ResolvedWatch, WatchedTag

HOSTILE_TAG = "Inject\ntouch PWNED_TAG;#"
HOSTILE_PREFIX = "fe80::%x\ntouch PWNED_PREFIX;#/64"
MARKUP = ['<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '[click](javascript:alert(1))',
          '<a href="http://evil.example">x</a>']
RULES = ("nftables", "iptables", "azure-nsg", "paloalto", "cisco-asa", "fortigate", "csv", "terraform", "json")


def hostile_view() -> dict:
    """A ticket whose tag names carry a shell command and markup (valid prefixes)."""
    names = [HOSTILE_TAG, *(f"Storage.{m}" for m in MARKUP)]
    watch = ResolvedWatch("example", "public", ("eastus2",), True,
                          tuple(WatchedTag(n, "extra", None, (f"{n}.example",)) for n in names), (HOSTILE_TAG,))
    new = store.PublicationInfo(2, "public", dt.date(2025, 10, 28), 401, "f" * 64, f"{MARKUP[0]}\n{HOSTILE_TAG}",
                                dt.datetime(2025, 10, 29, tzinfo=dt.timezone.utc), 3, 6)
    after = {n: diffs.TagState(1, frozenset({f"10.{i}.0.0/24"})) for i, n in enumerate(names)}
    changes = [diffs.diff_tag(n, None, after[n]) for n in names]
    context = tickets.build_context(watch, None, new, changes, after, uid="u", removal_hold_ratio=0.3,
                                    implausible=(HOSTILE_TAG, MARKUP[1]))
    view = copy.deepcopy(render.sample_views()[0])
    view.update({k: v for k, v in context.items()})
    view["ticket"]["state"] = "hold"
    view["trail"] = [{"at": "2025", "actor": HOSTILE_TAG, "action": "create", "to_state": "hold",
                      "comment": MARKUP[0]}]
    return view


def assert_no_injected_line(text: str, fmt: str) -> None:
    for line in text.splitlines():
        assert not line.lstrip().startswith("touch"), (fmt, line)
        if "PWNED" in line and fmt in RULES and fmt not in ("csv", "json"):
            assert line.lstrip().startswith(("#", "!")), (fmt, line)  # only ever inside a comment


@pytest.mark.parametrize("fmt", list(render.FORMATS))
def test_hostile_tag_names_give_no_extra_line_command_or_markup(fmt):
    view = hostile_view()
    text = render.render(Settings(), fmt, view)
    benign = render.render(Settings(), fmt, render.sample_views()[0])
    assert_no_injected_line(text, fmt)
    shown = text.replace("\\", "")  # Markdown escapes _ with a backslash
    assert "PWNED_TAG" in shown or fmt in RULES  # the name is shown, escaped, where the format shows names
    if fmt in ("md", "html"):
        for needle in ("<script", "<img", "<a href"):
            assert needle not in text, (fmt, needle)
    if fmt == "md":
        assert not re.search(r"(?<!\\)\]\(", text)  # no Markdown link: its brackets are escaped
    if fmt in ("md", "txt", "summary"):
        assert "Inject?touch PWNED_TAG;#" in shown  # one line, the newline made visible
    if fmt == "csv":
        assert len(text.splitlines()) == 1 + len(view["firewall"]["objects"]["v4"] + view["firewall"]["objects"]["v6"])
    if fmt == "json":
        assert json.loads(text)["objects"] == view["firewall"]["objects"]
    assert len(text) < 20 * len(benign) + 20_000


@pytest.mark.parametrize("fmt", list(render.FORMATS))
def test_a_hostile_prefix_is_refused_by_rule_formats_and_escaped_in_tickets(fmt):
    view = hostile_view()
    view["firewall"]["objects"]["v6"] = [HOSTILE_PREFIX]
    view["firewall"]["dropped"]["v6"] = [HOSTILE_PREFIX]
    view["tags"][0]["added"] = [HOSTILE_PREFIX]
    view["tags"][0]["net_added"] = [HOSTILE_PREFIX]
    if fmt in RULES:
        with pytest.raises(RenderError, match=f"built-in template {render.FORMATS[fmt]}: refusing to render"):
            render.render(Settings(), fmt, view)
        return
    text = render.render(Settings(), fmt, view)
    assert_no_injected_line(text, fmt)


def test_hostile_snippets_run_in_a_private_namespace_execute_nothing_but_rules(tmp_path):
    view = hostile_view()
    (tmp_path / "rules.nft").write_text(render.render(Settings(), "nftables", view))
    (tmp_path / "rules.ipset").write_text(render.render(Settings(), "iptables", view))
    (tmp_path / "nsg.sh").write_text(render.render(Settings(), "azure-nsg", view))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\" >> az.args\n")
    (bin_dir / "az").chmod(0o755)
    done = subprocess.run(
        ["unshare", "-n", "sh", "-ec", "nft -f rules.nft; ipset restore < rules.ipset; "
         "RESOURCE_GROUP=rg NSG_NAME=nsg sh nsg.sh"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("PWNED*"))
    args = (tmp_path / "az.args").read_text().splitlines()
    assert "--destination-address-prefixes" in args and not any(a.startswith("touch") for a in args)


# ---------------------------------------------------------------- limits


def user_settings(tmp_path: Path, files: dict[str, str], seconds: float = 5.0) -> Settings:
    folder = tmp_path / "templates"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return Settings(tickets=TicketSettings(template_dir=str(folder), render_seconds=seconds))


@pytest.mark.parametrize("text,message", [
    ("{{ 'x' | center(10**9) }}", "center width of 1000000000 exceeds"),
    ("{{ 'x'.center(10**9) }}", "center width of 1000000000 exceeds"),
    ("{{ '{:>1000000000}'.format(1) }}", "a format width of 1000000000 exceeds"),
    ("{{ '{:>{}}'.format(1, 10**9) }}", "nested format specifications"),
    ("{{ '%1000000000s' % 'x' }}", "a % format width"),
    ("{{ '%1000000000s' | format('x') }}", "a % format width"),
    ("{{ [1, 2] | slice(10**8) | list | length }}", "slice count of 100000000 exceeds"),
    ("{{ 'x' | indent(10**9) }}", "indent width"),
    ("{{ lipsum(10**7) }}", "lipsum size"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "(loop steps|render limit)"),
    ("{% for t in tags %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
     "{% endfor %}", "(loop steps|render limit)"),
])
def test_templates_that_would_take_gigabytes_or_hang_are_stopped_quickly(tmp_path, text, message):
    settings = user_settings(tmp_path, {"ticket.md.j2": text})
    started = time.monotonic()
    with pytest.raises(RenderError, match=f"user template ticket.md.j2: .*{message}"):
        render.render(settings, "md", render.sample_views()[0])
    assert time.monotonic() - started < 10


def test_a_user_loop_over_data_is_stopped_by_the_clock_or_the_step_budget(tmp_path):
    # No range at all: the user's own loops are counted line by line.
    text = "{% set xs = tags * 50 %}{% for a in xs %}{% for b in xs %}{% for c in xs %}{% for d in xs %}" \
           "{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
    settings = user_settings(tmp_path, {"summary.txt.j2": text}, seconds=1.0)
    started = time.monotonic()
    with pytest.raises(RenderError, match="user template summary.txt.j2: (took more than the render limit|more than)"):
        render.render(settings, "summary", render.sample_views()[0])
    assert time.monotonic() - started < 10


def test_limits_hold_in_the_cli_and_the_daemon_goes_on(engine, db_url, tmp_path):
    hang = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    settings = user_settings(tmp_path, {"summary.txt.j2": hang, "ticket.html.j2": hang})
    config = tmp_path / "watcher.toml"
    config.write_text(f'[tickets]\ntemplate_dir = "{tmp_path / "templates"}"\n'
                      '[[registries]]\nname = "myreg"\nregions = ["eastus2"]\n')
    import_made(engine, make_settings(), "20250101", week())
    runner = CliRunner()
    started = time.monotonic()
    result = runner.invoke(main, ["--db", db_url, "--config", str(config), "tickets", "show", "1"])
    assert result.exit_code == 1 and re.search(r"user template summary.txt.j2: (more than|took more)", result.output)
    check = runner.invoke(main, ["--db", db_url, "--config", str(config), "tickets", "check-templates"])
    assert check.exit_code == 1 and "BROKEN" in check.output
    # The delivery loop records the failure for this ticket and carries on.
    url = "json://127.0.0.1:9/"
    with_url = Settings(registries=make_settings().registries, notify=NotifySettings(urls=(url,)),
                        tickets=settings.tickets)
    with engine.begin() as conn:
        notify.enqueue(conn, [1], with_url)
    results = notify.deliver_due(engine, with_url)
    assert len(results) == 1 and "rendering failed" in results[0].error and "summary.txt.j2" in results[0].error
    assert time.monotonic() - started < 30

"""Rendering: the real Storage.EastUS2 change as tickets and as rule snippets whose syntax is checked
(nftables with `nft -c`), autoescaping, and the sandbox around user templates."""
from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import json
import re
import resource
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.ticket_helpers import approve_baselines, import_made, import_real_pair, make_settings, utc, week
from watcher import render, review, state, tickets
from watcher.cli import main
from watcher.errors import RenderError
from watcher.settings import Settings, TicketSettings

CIDR = r"[0-9a-f.:]+/\d{1,3}"


def _cidr(text: str) -> str:
    return str(ipaddress.ip_network(text))  # raises on anything that is not a canonical network


def check_nftables(text: str, tmp_path) -> None:
    path = tmp_path / "rules.nft"
    path.write_text(text)
    done = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def check_iptables(text: str) -> None:
    """ipset restore input: create, flush, add, swap and destroy lines only."""
    commands = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
    for line in commands:
        m = re.fullmatch(r"create \S+ hash:net family inet6? maxelem 262144 -exist|flush \S+|add \S+ (\S+)|"
                         r"swap \S+ \S+|destroy \S+", line)
        assert m, line
        if m.group(1):
            _cidr(m.group(1))
        assert all(len(word) <= 31 for word in line.split()[1:3] if word.startswith("wt_")), line


def check_azure_nsg(text: str, priority: int) -> list[str]:
    rules = [l for l in text.splitlines() if l.startswith("az ")]
    prefixes = []
    for index, line in enumerate(rules):
        m = re.fullmatch(r"az network nsg rule create --resource-group \"\$RESOURCE_GROUP\" --nsg-name \"\$NSG_NAME\" "
                         r"--name (wt-[a-z0-9-]+) --priority (\d+) --direction Outbound --access Allow "
                         r"--protocol Tcp --source-address-prefixes VirtualNetwork --source-port-ranges '\*' "
                         r"--destination-port-ranges 443 --description '[^']+' --destination-address-prefixes "
                         r"((?:\S+ ?)+)", line)
        assert m, line
        assert int(m.group(2)) == priority + index  # stable: from the config, one per family
        found = [_cidr(p) for p in m.group(3).split()]
        assert len({ipaddress.ip_network(p).version for p in found}) == 1  # one family per NSG rule
        prefixes += found
    return prefixes


def check_paloalto(text: str) -> list[str]:
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
    for line in lines:
        assert re.fullmatch(
            r"set address wt-\S+ ip-netmask " + CIDR + r"|"
            r"set address-group wt_\w+ static \[ (wt-\S+ )+\]|delete address-group wt_\w+ static wt-\S+|"
            r"delete address wt-\S+", line), line
        for name in re.findall(r"wt-\S+", line):
            assert re.fullmatch(r"[\w.-]{1,63}", name), name
    return lines


def check_cisco_asa(text: str) -> list[str]:
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("!")]
    depth = 0
    for line in lines:
        if line.startswith("object-group network "):
            assert depth == 0 and re.fullmatch(r"object-group network wt_\w{1,61}", line)
            depth = 1
        elif line == "exit":
            assert depth == 1
            depth = 0
        else:
            assert depth == 1, line
            m = re.fullmatch(r" (?:no )?network-object (?:(\d+\.\d+\.\d+\.\d+) (\d+\.\d+\.\d+\.\d+)|(" + CIDR + r"))|"
                             r" description .+", line)
            assert m, line
            if m.group(1):
                ipaddress.ip_network(f"{m.group(1)}/{m.group(2)}")
            elif m.group(3):
                _cidr(m.group(3))
    assert depth == 0
    return lines


def check_fortigate(text: str) -> None:
    stack: list[str] = []
    for line in (l.strip() for l in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("config firewall "):
            assert not stack and re.fullmatch(r"config firewall (address6?|addrgrp6?)", line), line
            stack.append("config")
        elif line.startswith("edit "):
            assert stack == ["config"] and re.fullmatch(r'edit "[\w.:-]+"', line), line
            stack.append("edit")
        elif line == "next":
            assert stack.pop() == "edit"
        elif line == "end":
            assert stack.pop() == "config"
        elif line.startswith("delete "):
            assert stack == ["config"] and re.fullmatch(r'delete "wt-[\w.-]+"', line), line
        else:
            assert stack == ["config", "edit"], line
            m = re.fullmatch(r'set subnet (\S+) (\S+)|set ip6 (\S+)|set comment "[^"]*"|set member( "wt-[\w.-]+")+', line)
            assert m, line
            if m.group(1):
                ipaddress.IPv4Network(f"{m.group(1)}/{m.group(2)}")
            if m.group(3):
                _cidr(m.group(3))
    assert not stack


def parse_csv(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        _cidr(row["cidr"])
        assert row["phase"] in ("add", "remove") and row["port"] == "443" and row["protocol"] == "TCP"
    return rows


def families(cidrs) -> dict[str, list[str]]:
    return {"v4": [c for c in cidrs if ":" not in c], "v6": [c for c in cidrs if ":" in c]}


def test_real_ticket_renders_every_format_as_the_full_state_of_its_phase(engine, tmp_path):
    settings = make_settings()
    import_real_pair(engine, settings)
    with engine.connect() as conn:
        (held,) = tickets.list_tickets(conn, "hold")
        baseline = state.current(conn, "public", "myreg")
    review.transition(engine, held.id, "release", "alice")
    review.transition(engine, held.id, "approve", "bob")
    with engine.connect() as conn:
        approved = state.current(conn, "public", "myreg")
        ticket = tickets.get_ticket(conn, held.id)
        out = {(fmt, phase): render.render_ticket(conn, settings, ticket, fmt, phase)
               for fmt in render.FORMATS for phase in ("add", "remove")}
    expected = {"add": states_union(baseline.final, approved.final), "remove": approved.final}
    assert "2603:1030:40f::/48" in expected["add"]["v6"] and "2603:1030:40f::/48" not in expected["remove"]["v6"]
    for fmt in ("md", "html", "txt"):
        text = out[(fmt, "add")]
        for needle in ("Storage.EastUS2", "2025-10-28", "2025-10-13", held.context["source"]["sha256"], "373",
                       "375", "myreg.azurecr.io", "myreg.eastus2.data.azurecr.io", "TCP 443", "2025-11-04",
                       "135.130.158.0/23", "2603:1030:40f::/49", "2603:1030:40f::/48", "2603:1030:40f:8000::/49",
                       "[watcher ticket 2]", held.uid, "Rollback", "verify", "alice", "bob"):
            assert needle.lower() in text.lower(), (fmt, needle)
        top = text[text.index("<body>"):] if fmt == "html" else text
        assert "approved" in top[:400].lower() and "ON HOLD" not in top[:400]
    for phase, lists in expected.items():
        check_nftables(out[("nftables", phase)], tmp_path)
        check_iptables(out[("iptables", phase)])
        assert families(check_azure_nsg(out[("azure-nsg", phase)], 3004)) == lists
        check_paloalto(out[("paloalto", phase)])
        check_cisco_asa(out[("cisco-asa", phase)])
        check_fortigate(out[("fortigate", phase)])
        assert families([r["cidr"] for r in parse_csv(out[("csv", phase)])]) == lists
        assert json.loads(out[("json", phase)])["objects"] == lists
        assert re.findall(r'"([0-9a-f.:]+/\d+)"', out[("terraform", phase)]) == lists["v4"] + lists["v6"]
    assert "delete address wt-2603_1030_40f__-48" in out[("paloalto", "remove")]
    assert "delete address" not in out[("paloalto", "add")]
    assert " no network-object 2603:1030:40f::/48" in out[("cisco-asa", "remove")]
    assert 'delete "wt-2603_1030_40f__-48"' in out[("fortigate", "remove")]
    assert len(out[("summary", "add")].splitlines()) < 10


def states_union(first, second):
    return state.union(first, second)


def read_nft_set(netns_script: str) -> str:
    return netns_script


def run_in_netns(script: str, tmp_path) -> subprocess.CompletedProcess:
    """``script`` (sh) in a private network namespace, from ``tmp_path``: nothing touches the host's firewall."""
    return subprocess.run(["unshare", "-n", "sh", "-ec", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def nft_set_elements(text: str, name: str) -> list[str]:
    data = json.loads(text)
    for item in data["nftables"]:
        if "set" in item and item["set"]["name"] == name:
            found = []
            for element in item["set"].get("elem", []):
                prefix = element["prefix"]
                found.append(f"{prefix['addr']}/{prefix['len']}")
            return found
    raise AssertionError(f"set {name} not found")


def test_snippets_applied_in_a_private_network_namespace_leave_exactly_the_state(engine, tmp_path):
    """nft -f and ipset restore + iptables-restore, for real: twice, and after the earlier snippet."""
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.5.0/24"), acr_eastus2=("10.3.0.0/24",)), 2)
    with engine.connect() as conn:
        first = tickets.get_ticket(conn, 1)
        old = {fmt: render.render_ticket(conn, settings, first, fmt, "remove") for fmt in ("nftables", "iptables")}
    review.transition(engine, 2, "approve", "bob", now=lambda: utc(2025, 1, 9))
    with engine.connect() as conn:
        ticket = tickets.get_ticket(conn, 2)
        snippets = {(fmt, phase): render.render_ticket(conn, settings, ticket, fmt, phase)
                    for fmt in ("nftables", "iptables") for phase in ("add", "remove")}
        approved = state.current(conn, "public", "myreg")
    for name, text in {"old": old, **{phase: {f: snippets[(f, phase)] for f in ("nftables", "iptables")}
                                      for phase in ("add", "remove")}}.items():
        (tmp_path / f"{name}.nft").write_text(text["nftables"])
        (tmp_path / f"{name}.ipset").write_text(text["iptables"])
    (tmp_path / "rules.v4").write_text("*filter\n-A OUTPUT -p tcp --dport 443 -m set --match-set wt_myreg_4 dst "
                                       "-j ACCEPT\nCOMMIT\n")
    done = run_in_netns(
        "nft -f old.nft; nft -f add.nft; nft -f add.nft; nft -j list set inet watcher wt_myreg_v4 > add.json; "
        "nft -f remove.nft; nft -j list set inet watcher wt_myreg_v4 > remove.json; "
        "ipset restore < old.ipset; iptables-restore rules.v4; ipset restore < add.ipset; ipset restore < add.ipset; "
        "ipset save wt_myreg_4 > add.saved; ipset restore < remove.ipset; ipset save wt_myreg_4 > remove.saved; "
        "iptables -S OUTPUT > rules.saved; ipset list -n > sets.saved", tmp_path)
    assert done.returncode == 0, done.stderr
    effective_add = approved.effective(utc(2025, 1, 9))["v4"]
    assert approved.effective(utc(2025, 1, 16))["v4"] == approved.final["v4"] != effective_add
    assert nft_set_elements((tmp_path / "add.json").read_text(), "wt_myreg_v4") == effective_add
    assert nft_set_elements((tmp_path / "remove.json").read_text(), "wt_myreg_v4") == approved.final["v4"]
    for phase, expected in (("add", effective_add), ("remove", approved.final["v4"])):
        saved = (tmp_path / f"{phase}.saved").read_text().splitlines()
        assert sorted(l.split()[2] for l in saved if l.startswith("add ")) == sorted(expected)
    assert "--match-set wt_myreg_4 dst" in (tmp_path / "rules.saved").read_text()
    assert (tmp_path / "sets.saved").read_text().split() == ["wt_myreg_4", "wt_myreg_6"]  # no temporary set left


def test_nft_check_rejects_a_broken_set(tmp_path):
    # The syntax check is a real one: nft refuses an impossible prefix.
    with pytest.raises(AssertionError):
        check_nftables("table inet watcher {\n set s {\n type ipv4_addr\n flags interval\n"
                       " elements = { 10.0.0.0/33 }\n }\n}\n", tmp_path)


def test_a_ticket_from_get_ticket_renders_as_a_listed_one_and_its_view_reads_serve_one_view(engine):
    """On PostgreSQL get_ticket reads the view's rows in its round trip; the first view takes them (on the same
    connection only), any other view reads afresh; every format comes out as from a ticket read without them."""
    settings = make_settings()
    import_real_pair(engine, settings)
    with engine.connect() as conn:
        (held,) = tickets.list_tickets(conn, "hold")
    review.transition(engine, held.id, "release", "alice")
    review.transition(engine, held.id, "approve", "bob")
    formats = list(render.FORMATS)
    with engine.connect() as conn, engine.connect() as other:
        (listed,) = [t for t in tickets.list_tickets(conn) if t.id == held.id]
        assert listed.view_reads is None
        expected = {phase: render.render_formats(conn, settings, listed, formats, phase) for phase in ("add", "remove")}
        got = tickets.get_ticket(conn, held.id)
        assert (got.view_reads is not None) == (engine.dialect.name == "postgresql")
        assert render.render_formats(conn, settings, got, formats, "add") == expected["add"]
        assert got.view_reads is None or got.view_reads.take(conn) is None  # taken by the first view
        assert render.render_formats(conn, settings, got, formats, "remove") == expected["remove"]  # read afresh
        elsewhere = tickets.get_ticket(conn, held.id)
        assert render.render_formats(other, settings, elsewhere, formats, "add") == expected["add"]
        assert elsewhere.view_reads is None or elsewhere.view_reads.take(conn) is None  # dropped by that first view
        assert tickets.get_ticket(conn, held.id, view=False).view_reads is None


def test_html_and_markdown_are_escaped_and_text_is_not(engine):
    settings = make_settings()
    source = "https://mirror.example/a=1&b=<i>x</i>/ServiceTags_Public_20250101.json"
    import_made(engine, settings, "20250101", week(), source=source)
    with engine.connect() as conn:
        (ticket,) = tickets.list_tickets(conn)
        html = render.render_ticket(conn, settings, ticket, "html")
        md = render.render_ticket(conn, settings, ticket, "md")
        txt = render.render_ticket(conn, settings, ticket, "txt")
    assert "a=1&amp;b=&lt;i&gt;x&lt;/i&gt;" in html and "<i>x</i>" not in html
    assert "a=1&amp;b=&lt;i&gt;x&lt;/i&gt;" in md and "<i>" not in md
    assert source in txt and "&amp;" not in txt


def user_settings(tmp_path, files: dict[str, str], cap: int = 2 * 1024 * 1024) -> Settings:
    folder = tmp_path / "templates"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return Settings(tickets=TicketSettings(template_dir=str(folder), output_cap_bytes=cap))


ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"


@pytest.mark.parametrize("name,text,message", [
    ("ticket.md.j2", ESCAPE, "sandbox"),
    ("rules/csv.j2", "{{ tags.append(1) }}", "sandbox"),
    ("ticket.txt.j2", "{{ no_such_variable }}", "no_such_variable"),
    ("ticket.html.j2", "{% for x in tags %}", "syntax error"),
    ("summary.txt.j2", "{% for i in range(100000) %}0123456789{% endfor %}", "exceeds the cap"),
])
def test_broken_user_templates_are_reported_at_check_time(tmp_path, name, text, message):
    settings = user_settings(tmp_path, {name: text}, cap=50_000)
    results = {r.template: r for r in render.check_templates(settings)}
    broken = results[name]
    assert not broken.ok and broken.origin == "user"
    assert isinstance(broken.error, RenderError) and message in str(broken.error)
    assert all(r.ok for n, r in results.items() if n != name)  # the built-ins still serve the other formats
    view = render.sample_views()[0]
    with pytest.raises(RenderError, match=message):
        render.render(settings, next(f for f, n in render.FORMATS.items() if n == name), view)


@contextlib.contextmanager
def address_space_limited(extra: int):
    """This process may grow by about ``extra`` bytes meanwhile (Linux: the soft RLIMIT_AS)."""
    size = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_templates_that_would_allocate_without_bound_are_refused_before_they_do(tmp_path):
    settings = user_settings(tmp_path, {
        "ticket.md.j2": '{{ "x" * 10**9 }}',
        "ticket.txt.j2": '{% set s = [0] * 10**8 %}{{ s | length }}',  # tiny output: the cap alone never sees it
        "summary.txt.j2": "{{ 10 * 'ab' }} {% set n = 7 ** (10 ** 6) %}{{ n > 1 }}",
        "rules/csv.j2": "{{ 2 ** 64 }} {{ (-3) ** 3 }} {{ 'ab' * 3 }} {{ 1.5 ** 2 }}",  # small ones still work
    }, cap=50_000)
    started = time.monotonic()
    with address_space_limited(512 * 1024 * 1024):  # should the guard regress: a MemoryError, not the OOM killer
        results = {r.template: r for r in render.check_templates(settings)}
    assert time.monotonic() - started < 10
    for name in ("ticket.md.j2", "ticket.txt.j2", "summary.txt.j2"):
        assert not results[name].ok and "refused by the sandbox" in str(results[name].error), results[name]
    assert "exceeds the output cap of 50000 bytes" in str(results["ticket.md.j2"].error)
    assert "power of more than 4096 bits" in str(results["summary.txt.j2"].error)
    assert results["rules/csv.j2"].ok
    assert render.render(settings, "csv", render.sample_views()[0]) == "18446744073709551616 -27 ababab 2.25"


def test_user_template_overrides_and_check_templates_cli(tmp_path):
    folder = tmp_path / "templates"
    user_settings(tmp_path, {"ticket.md.j2": "custom {{ ticket.ref }} {{ tags | length }}\n"})
    good = render.render(Settings(tickets=TicketSettings(template_dir=str(folder))), "md", render.sample_views()[0])
    assert good == "custom [watcher ticket 1] 2\n"
    config = tmp_path / "watcher.toml"
    config.write_text(f'[tickets]\ntemplate_dir = "{folder}"\n')
    runner = CliRunner()
    ok = runner.invoke(main, ["--db", f"sqlite:///{tmp_path}/w.db", "--config", str(config), "tickets", "check-templates"])
    assert ok.exit_code == 0, ok.output
    assert re.search(r"ok +md +user +ticket\.md\.j2", ok.output)
    (folder / "rules").mkdir()
    (folder / "rules" / "nftables.j2").write_text(ESCAPE)
    bad = runner.invoke(main, ["--db", f"sqlite:///{tmp_path}/w.db", "--config", str(config), "tickets", "check-templates"])
    assert bad.exit_code == 1
    assert re.search(r"BROKEN +nftables +user +rules/nftables\.j2: .*sandbox", bad.output)
    assert "1 template(s) broken" in bad.output


def _template(text: str, **data) -> str:
    """A one-off template in the renderer's own sandboxed environment (its filters and one-line output)."""
    env = render._environment(None, 2 * 1024 * 1024)
    return env.from_string(text).render(**data)


def test_lines_escapes_each_item_as_the_loop_it_replaces_did():
    items = ["10.0.0.0/24", "a*b_<i>\nrm -rf /", "2603:1030::/48"]
    md = _template('{{ xs | lines("- {item}", "md") }}', xs=items)
    assert md == "- 10.0.0.0/24\n- a\\*b\\_&lt;i&gt;?rm -rf /\n- 2603:1030::/48"
    text = _template('{{ xs | lines("  allow {item}", "one_line") }}', xs=items)
    assert text.splitlines() == ["  allow 10.0.0.0/24", "  allow a*b_<i>?rm -rf /", "  allow 2603:1030::/48"]
    html = render._environment(None, 2 * 1024 * 1024).from_string(
        '{% autoescape true %}{{ xs | lines("<li>{item}</li>" | safe, "html") }}|'
        '{{ xs | lines("<b>{item}</b>", "html") }}{% endautoescape %}').render(xs=items)
    listed, unsafe_pattern = html.split("|")
    assert listed == "<li>10.0.0.0/24</li>\n<li>a*b_&lt;i&gt;?rm -rf /</li>\n<li>2603:1030::/48</li>"
    assert "<b>" not in unsafe_pattern and "&lt;b&gt;10.0.0.0/24&lt;/b&gt;" in unsafe_pattern
    assert _template('{{ xs | lines("- {item}", "md") }}', xs=[]) == ""
    with pytest.raises(RenderError, match="escape must be"):
        _template('{{ xs | lines("{item}", "shell") }}', xs=items)


def test_each_on_joined_families_names_and_masks_every_prefix_once():
    v4 = render.checked_cidrs(["10.0.0.0/23", "10.0.4.0/24"])
    empty = render.checked_cidrs([])
    v6 = render.checked_cidrs(["2603:1030::/48"])
    joined = v4 + empty + v6
    assert isinstance(joined, render.CheckedCidrs)
    assert render.each(joined, "{name} {mask}") == ("wt-10.0.0.0-23 10.0.0.0 255.255.254.0\n"
                                                   "wt-10.0.4.0-24 10.0.4.0 255.255.255.0\n"
                                                   "wt-2603_1030__-48 2603:1030::/48")
    assert render.each(empty + empty, "{name}") == ""
    with pytest.raises(RenderError, match="not a plain CIDR"):
        render.each(["10.0.0.0/24\nflush ruleset"], "{cidr}")


def test_a_list_checked_before_is_known_by_its_digest_and_no_other_list_passes_for_it():
    good = ["10.0.0.0/24", "10.0.1.0/24", "2603:1030::/48"]
    assert render.checked_cidrs(good) == tuple(good)
    assert render._list_digest(good) in render._CHECKED_LISTS
    render._KNOWN_CIDRS.clear()  # the values are no longer known one by one: the list is, by its digest
    assert render.checked_cidrs(list(good)) == tuple(good) and not render._KNOWN_CIDRS
    # Lists whose values joined give the same text, or that hold what a digest cannot name, are checked value by
    # value (and refused).
    for forged in (["10.0.0.0/24\x0010.0.1.0/24", "2603:1030::/48"], ["10.0.0.0/24\n10.0.1.0/24\n2603:1030::/48"],
                   ["10.0.0.0/24", "10.0.1.0/24\x00", "2603:1030::/48"], ["10.0.0.0/24", 7, "2603:1030::/48"],
                   ["10.0.0.0/24", "\udc80", "2603:1030::/48"]):
        assert render._list_digest(forged) not in render._CHECKED_LISTS
        with pytest.raises(RenderError, match="not a plain CIDR"):
            render.checked_cidrs(forged)
    assert render.checked_cidrs([]) == ()


def test_a_block_put_on_one_line_is_printed_as_is_and_other_line_breaks_are_not():
    xs = render.checked_cidrs(["10.0.0.0/24", "10.0.1.0/24"])
    assert _template('[{{ xs | each("{cidr}") | replace("\\n", " ") }}]', xs=xs) == "[10.0.0.0/24 10.0.1.0/24]"
    assert _template('[{{ xs | each("{cidr}") | replace("0", "\\n") }}]', xs=xs).count("\n") == 0
    assert _template('[{{ data | tojson }}]', data={"a": "x\x7f\ny"}) == '[{"a": "x\\u007f\\ny"}]'  # JSON escapes
    assert _template('[{{ {"a": [1]} | tojson(indent=1) }}]').count("\n") == 0


def test_tojson_writes_prefix_lists_as_the_json_encoder_does():
    import jinja2

    env = render._environment(None, 2 * 1024 * 1024)
    v4 = render.checked_cidrs(["10.0.0.0/23", "10.0.4.0/24"])
    v6 = render.checked_cidrs(["2603:1030::/48"])
    data = {"objects": {"v4": v4, "v6": v6, "none": render.checked_cidrs([])}, "name": "<a & 'b'>\x00",
            "nested": [[{"x": v4}]], "n": 3, "listed": ["10.0.0.0/24"]}
    template = ('{{ {"objects": {"v4": objects.v4 | cidrs, "v6": objects.v6, "none": objects.none | cidrs}, '
                '"name": name, "nested": nested, "n": n, "listed": listed | cidrs} | tojson }}')
    plain = {"objects": {"v4": list(v4), "v6": list(v6), "none": []}, "name": data["name"],
             "nested": [[{"x": list(v4)}]], "n": 3, "listed": ["10.0.0.0/24"]}
    expected = str(jinja2.utils.htmlsafe_json_dumps(plain, sort_keys=True))
    assert env.from_string(template).render(**data) == expected
    assert render._json_with_lists({**data, "listed": render.cidr_list(data["listed"])}) == expected  # joined
    # A placeholder's text in the data itself, or no list to join: the encoder writes it all, as before.
    assert render._json_with_lists({"a": v4, "\x000\x00": 1}) is None
    assert render._json_with_lists({"a": [1]}) is None
    collision = {"objects": {"v4": v4}, "\x000\x00": "\x001\x00"}
    assert env.from_string("{{ data | tojson }}").render(data=collision) == str(
        jinja2.utils.htmlsafe_json_dumps({"objects": {"v4": list(v4)}, "\x000\x00": "\x001\x00"}, sort_keys=True))


def test_rows_of_text_subclasses_join_as_plain_text():
    import markupsafe

    known = render.checked_cidrs(["10.0.0.0/24", "10.0.1.0/24"])  # now known: Markup copies of them pass the check
    marked = [markupsafe.Markup("10.0.0.0/24"), markupsafe.Markup("10.0.1.0/24")]
    assert render.each(marked, '"{cidr}" & {name}') == '"10.0.0.0/24" & wt-10.0.0.0-24\n"10.0.1.0/24" & wt-10.0.1.0-24'
    assert render.each(marked[:1], "<{cidr}>") == "<10.0.0.0/24>" and known
    block = render.each(known, "{cidr}")
    assert str(block) is block  # printed without a copy


def test_netmask_gives_what_ipaddress_gives_and_refuses_what_it_refuses() -> None:
    def by_ipaddress(text: str) -> str:
        network = ipaddress.IPv4Network(text)
        return f"{network.network_address} {network.netmask}"

    cases = ["0.0.0.0/0", "255.255.255.255/32", "20.36.0.0/14", "10.0.0.0/8", "10.0.0.0", "192.168.1.128/25",
             "10.0.0.1/24", "010.0.0.0/8", "10.0.0.0/08", "10.0.0.0/33", "1.2.3/24", "256.0.0.0/8", "10.0.0.0/-1"]
    for text in cases:
        render.netmask.cache_clear()
        try:
            expected = by_ipaddress(text)
        except ValueError:
            with pytest.raises(ValueError):
                render.netmask(text)
        else:
            assert render.netmask(text) == expected, text


def test_compile_templates_leaves_every_rule_template_and_its_includes_compiled() -> None:
    from watcher.settings import TicketSettings

    settings = TicketSettings()
    render.compile_templates(settings, render.RULE_FORMATS)
    env = render.Renderer(settings).env
    compiled = {name for _, name in env.cache.keys()}
    assert {render.template_name(f) for f in render.RULE_FORMATS} | {"rules/_header.j2"} <= compiled

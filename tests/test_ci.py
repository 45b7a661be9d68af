"""The README's test command is the one CI runs, and it installs what the tests need."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def readme_block_after(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(marker)
    return re.search(r"```sh\n(.*?)\n```", text[start:], re.S).group(1).strip()


def test_ci_runs_the_readme_s_test_command() -> None:
    command = readme_block_after("Install and pass the tests")
    assert command.startswith("scripts/install-test-deps && ")
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_the_install_script_is_valid_bash_and_idempotent_here() -> None:
    script = REPO / "scripts" / "install-test-deps"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # Everything is installed and running on this machine: a second run changes nothing and says nothing.
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr

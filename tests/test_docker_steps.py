"""The Dockerfile's steps without Docker: build the wheel from what the Dockerfile copies, install it into a
fresh virtualenv, run ``watcher run`` (ENTRYPOINT + CMD, with the image's ENV) as an unprivileged user whose
only writable place is the data folder, and use the HEALTHCHECK command once it has imported.

Dependencies are not downloaded again: the fresh virtualenv sees the test environment's site-packages through
a ``.pth`` line (a venv made from a venv's python gets the *base* interpreter's packages with
--system-site-packages, not the venv's). The wheel itself is built by pip as the Dockerfile does (pip fetches
the build backend from PyPI), and installed without its dependencies.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO
from tests.daemon_helpers import DaemonProcess, serve_new_china_file
from tests.httpstub import Origin, free_port

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def image_env(data: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value.replace("/data", str(data))
    return env


def exec_form(name: str) -> list[str]:
    [args] = [json.loads(rest) for keyword, rest in stages()[-1] if keyword == name]
    return args


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if not p.is_symlink()}


def base_python() -> str:
    """A Python of this version the unprivileged user can run (the image's python:3.11-slim stands for it).

    The test's own interpreter may live where ``nobody`` cannot go (a pyenv under /root).
    """
    nobody = pwd.getpwnam("nobody")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (getattr(sys, "_base_executable", sys.executable), f"/usr/bin/python{version}",
                      shutil.which(f"python{version}") or ""):
        if candidate and Path(candidate).exists():
            probe = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                                    "--clear-groups", "--", candidate, "-c",
                                    "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"],
                                   capture_output=True, text=True, cwd="/")
            if probe.returncode == 0 and probe.stdout.strip() == version:
                return candidate
    pytest.fail(f"no Python {version} that the user nobody can run (install python{version})")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The image's /usr/local: a virtualenv with the wheel built from the files the Dockerfile copies."""
    work = Path(tempfile.mkdtemp(prefix="watcher-image-"))
    work.chmod(0o755)  # the unprivileged user must reach the venv inside
    try:
        src = work / "src"
        src.mkdir()
        for keyword, rest in stages()[0]:
            if keyword == "COPY":
                *sources, _dest = rest.split()
                for source in sources:
                    origin = REPO / source
                    (shutil.copytree if origin.is_dir() else shutil.copy2)(origin, src / source)
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
                        "--wheel-dir", str(wheels), str(src)], check=True, timeout=300)
        [wheel] = wheels.glob("azure_servicetag_watcher-*.whl")
        venv = work / "venv"
        subprocess.run([base_python(), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
        [site] = (venv / "lib").glob("python3*/site-packages")
        (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
        yield venv
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_image_steps_run_the_daemon_unprivileged_with_only_data_writable(installed: Path, origin: Origin) -> None:
    venv = installed
    nobody = pwd.getpwnam("nobody")
    data = Path(tempfile.mkdtemp(prefix="watcher-data-"))
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    marker = data.parent / f".{data.name}.started"
    marker.touch()
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **image_env(data), "WATCHER_HTTP_PORT": str(port),
           "WATCHER_SOURCE_URL": serve_new_china_file(origin), "WATCHER_CLOUDS": "china",
           "WATCHER_SCHEDULE": "*/2 * * * * *"}
    as_nobody = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--"]
    entrypoint = [str(venv / "bin" / exec_form("ENTRYPOINT")[0]), *exec_form("ENTRYPOINT")[1:]]
    healthcheck = re.search(r"CMD (\[.*\])", dict(stages()[-1])["HEALTHCHECK"]).group(1)
    before = tree(venv)
    daemon = DaemonProcess(env, command=[*entrypoint, *exec_form("CMD")], prefix=as_nobody, cwd=data)
    try:
        def status() -> dict:
            result = subprocess.run([*as_nobody, *entrypoint, "status", "--json"], env=env, cwd=data,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        daemon.wait_for(lambda: status()["clouds"][0]["newest_publication"], "the first import", seconds=60)
        check = json.loads(healthcheck)
        result = subprocess.run([*as_nobody, str(venv / "bin" / check[0]), *check[1:]], env=env, cwd=data,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "health: healthy" in result.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert json.loads(answer.read())["healthy"] is True
        code, seconds = daemon.terminate()
    finally:
        daemon.kill()
    try:
        assert code == 0 and seconds < 10, daemon.raw[-20:]
        # The installed package ran, not the checkout.
        located = subprocess.run([*as_nobody, str(venv / "bin" / "python"), "-c",
                                  "import watcher; print(watcher.__file__)"],
                                 env=env, cwd=data, capture_output=True, text=True, check=True).stdout
        assert located.startswith(str(venv))
        # Written: only the data folder.
        assert tree(venv) == before
        assert {p.name for p in data.iterdir()} >= {"watcher.db", "watcher.db.lock"}
        assert all(p.owner() == "nobody" for p in data.iterdir())
        outside = subprocess.run(
            ["find", "/tmp", "/var/tmp", "/dev/shm", "-xdev", "-user", "nobody", "-newer", str(marker),
             "-not", "-path", f"{data}*"], capture_output=True, text=True).stdout.split()
        assert outside == []
    finally:
        marker.unlink()
        shutil.rmtree(data, ignore_errors=True)

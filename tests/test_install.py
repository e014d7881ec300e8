"""A newcomer's first commands, typed as the README gives them, in a fresh clone.

The checkout is cloned (what is committed, as a newcomer gets it), a new
virtual environment made, and the README's "Install and run" lines run in
the clone's own directory, where the unbuilt source package sits first on
``python -m``'s path: the install must work there, and so must the run
command. ``python -m fastaccept`` from the source root says in one line what
to type instead. Every Makefile verb works from the clone too (with small
sizes, so the whole module takes a minute or two).

The run command is the README's with ``--port 0`` added: tests never take
a fixed port.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from fa_testutil import read_line

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_RE = re.compile(r"http://(?P<host>[0-9.]+):(?P<port>\d+)/")
#: pip may build the extensions and fetch the build requirements
INSTALL_TIMEOUT_S = 600

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                       reason="needs the git checkout the tests came from, and git"),
]


def readme_block(readme: str, heading: str) -> List[str]:
    """The command lines of the first ```sh block under ``heading`` (comments dropped)."""
    section = readme.split(f"\n## {heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


class Clone:
    """A fresh clone with a virtual environment of its own, PATH pointing there."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(self.dir)], check=True,
                       timeout=120)
        self.venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=120)
        self.env: Dict[str, str] = {k: v for k, v in os.environ.items()
                                    if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env["VIRTUAL_ENV"] = str(self.venv)
        self.env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        self.readme = (self.dir / "README.md").read_text()

    def sh(self, line: str, timeout: float = INSTALL_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run one command line as a shell would, in the clone."""
        return subprocess.run(line, shell=True, cwd=str(self.dir), env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, line: str) -> subprocess.Popen:
        """Start one command line; exec, so that signals reach the command itself."""
        return subprocess.Popen(f"exec {line}", shell=True, cwd=str(self.dir), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The clone, with the README's install line(s) already run."""
    c = Clone(tmp_path_factory.mktemp("fresh"))
    *install, _ = readme_block(c.readme, "Install and run")
    assert install, "the README's 'Install and run' block has no install line"
    for line in install:
        proc = c.sh(line)
        assert proc.returncode == 0, f"`{line}` failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return c


def _serve_and_get(c: Clone, line: str, http_get) -> str:
    proc = c.popen(line)
    try:
        first = read_line(proc.stdout.fileno(), 60.0, proc).decode()
        match = ADDRESS_RE.search(first)
        assert match, f"`{line}` printed {first!r}"
        reply = http_get((match.group("host"), int(match.group("port"))), timeout=10.0)
        assert reply.startswith(b"HTTP/1.0 200 ") and reply.endswith(b"ok"), reply
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
        return proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_readme_run_command_works_in_the_clone(clone, http_get):
    run = readme_block(clone.readme, "Install and run")[-1]
    assert run.startswith("fastaccept "), f"the README's run line is {run!r}"
    out = _serve_and_get(clone, f"{run} --port 0", http_get)
    assert "accepted 1, handled 1" in out


def test_python_m_in_the_source_root_says_what_to_type(clone):
    proc = clone.sh("python -m fastaccept serve --port 0", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "`fastaccept serve`" in lines[0], proc.stderr


def test_python_m_elsewhere_works(clone, tmp_path, http_get):
    proc = subprocess.Popen([str(clone.venv / "bin" / "python"), "-m", "fastaccept", "serve",
                             "--port", "0"], cwd=str(tmp_path), env=clone.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        match = ADDRESS_RE.search(read_line(proc.stdout.fileno(), 60.0, proc).decode())
        assert match
        assert http_get((match.group("host"), int(match.group("port")))).endswith(b"ok")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("verb", [
    "build",
    "bench BENCH_ARGS='--quick --scenario throughput --only c-inline,fastaccept-1 --no-netns'",
    "debug STRESS_ARGS='-m 20000 -r 500 -k 100'",
    "test TESTS=tests/test_layout.py",
    "clean",
])
def test_makefile_verbs_work_from_the_clone(clone, verb):
    if verb.startswith("test"):
        # the README's "Test" install line first, as a newcomer would
        for line in readme_block(clone.readme, "Test")[:-1]:
            proc = clone.sh(line)
            assert proc.returncode == 0, proc.stderr[-3000:]
    if verb.startswith("debug") and shutil.which("gcc") is None:
        pytest.skip("make debug needs gcc")
    proc = clone.sh(f"make PYTHON=python {verb}")
    assert proc.returncode == 0, f"make {verb}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

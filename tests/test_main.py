"""The command line: ``python -m fastaccept serve`` (the demo server, fastaccept.demo)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from fa_testutil import read_line, run_cli

ADDRESS_RE = re.compile(r"http://(\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)/")


@pytest.fixture
def cli(tmp_path, no_leaks):
    """Return run(*args) -> a running `python -m fastaccept` child; killed in teardown.

    The child runs from tmp_path so it imports the installed package, not
    the source tree."""
    procs = []

    def run(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "fastaccept", *args], cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10.0)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_prints_address_answers_and_exits_on_sigint(cli, http_get):
    proc = cli("serve", "--port", "0", "--workers", "2")
    line = read_line(proc.stdout.fileno(), 30.0, proc).decode()
    match = ADDRESS_RE.search(line)
    assert match, f"no address in {line!r}"
    host = match.group("v4") or match.group("v6")
    port = int(match.group("port"))
    assert host == "127.0.0.1"
    assert port != 0

    reply = http_get((host, port), timeout=10.0)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert body == b"ok"

    proc.send_signal(signal.SIGINT)
    try:
        status = proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pytest.fail("the CLI did not exit within 10 s of SIGINT")
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    assert status == 0, f"exit status {status}\n{err}"
    assert "accepted 1, handled 1, handler errors 0" in out, out
    assert "Traceback" not in err, err


def test_serve_exits_on_sigterm(cli, http_get):
    proc = cli("serve", "--port", "0", "--workers", "1")
    match = ADDRESS_RE.search(read_line(proc.stdout.fileno(), 30.0, proc).decode())
    assert match
    address = (match.group("v4") or match.group("v6"), int(match.group("port")))
    assert http_get(address, timeout=10.0).endswith(b"\r\n\r\nok")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10.0) == 0


def test_serve_takes_overload_and_no_timeout(cli, http_get):
    proc = cli("serve", "--port", "0", "--workers", "1", "--overload", "shed",
               "--timeout", "none")
    match = ADDRESS_RE.search(read_line(proc.stdout.fileno(), 30.0, proc).decode())
    assert match, "no address printed"
    address = (match.group("v4") or match.group("v6"), int(match.group("port")))
    assert http_get(address, timeout=10.0).endswith(b"\r\n\r\nok")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10.0) == 0


def test_serve_behind_a_balancer(cli, http_get):
    """--proxy-protocol: a request behind a PROXY header is answered; a
    direct client (no header) is closed unanswered."""
    proc = cli("serve", "--port", "0", "--workers", "1", "--proxy-protocol")
    match = ADDRESS_RE.search(read_line(proc.stdout.fileno(), 30.0, proc).decode())
    assert match, "no address printed"
    address = (match.group("v4") or match.group("v6"), int(match.group("port")))
    request = b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\nGET / HTTP/1.0\r\n\r\n"
    assert http_get(address, timeout=10.0, request=request).endswith(b"\r\n\r\nok")
    assert http_get(address, timeout=10.0) == b""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10.0) == 0


@pytest.mark.parametrize("args", [
    ["serve", "--port", "0", "--workers", "0"],
    ["serve", "--port", "0", "--overload", "drop"],
    ["serve", "--port", "0", "--timeout", "soon"],
    ["serve", "--port", "0", "--timeout", "-1"],
    ["serve", "--port", "0", "--ring-size", "3"],
    ["serve", "--port", "70000"],
])
def test_serve_bad_arguments_exit_2(cli, args):
    proc = cli(*args)
    try:
        status = proc.wait(timeout=30.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`python -m fastaccept {' '.join(args)}` did not exit")
    err = proc.stderr.read().decode()
    assert status == 2, err
    assert "Traceback" not in err
    assert err.strip(), "no error message"


def test_serve_prints_stats_every_interval(cli):
    proc = cli("serve", "--port", "0", "--workers", "2", "--stats-interval", "0.05")
    assert "serving on" in read_line(proc.stdout.fileno(), 30.0, proc).decode()
    lines = [read_line(proc.stdout.fileno(), 10.0, proc).decode() for _ in range(2)]
    for line in lines:
        assert line.startswith("stats: accepted 0  handled 0"), line
        assert "kernel queue 0/2048" in line or "kernel queue 0/" in line, line
        assert "queue wait p50" in line and "ListenOverflows" in line, line
    proc.send_signal(signal.SIGINT)
    status = proc.wait(timeout=10.0)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    assert status == 0, err
    assert "stopped: accepted 0" in out
    assert "stopped on" in err          # the final stats log line
    assert "Traceback" not in err, err


@pytest.mark.parametrize("interval", ["0", "inf"])    # inf: an OverflowError in the printer
def test_serve_rejects_a_bad_stats_interval(tmp_path, interval):
    run = run_cli("serve", "--port", "0", "--stats-interval", interval, cwd=tmp_path)
    assert run.returncode == 2
    assert "--stats-interval must be > 0" in run.stderr


def test_no_verb_is_a_usage_error(cli):
    proc = cli()
    assert proc.wait(timeout=30.0) == 2
    assert b"usage" in proc.stderr.read().lower()

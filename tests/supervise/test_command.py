"""The serve and wsgi verbs with --processes, --listener, --fd and socket activation."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from typing import List

import pytest

from fa_testutil import read_line, read_to_eof, start_child

ADDRESS_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/")


@pytest.fixture
def cli(tmp_path, no_leaks):
    """run(*args, via=None) -> a running `python -m fastaccept ARGS` in its own
    session (``via``: a child program that execs it); killed in teardown."""
    procs: List[subprocess.Popen] = []

    def run(*args: str, via: str = "", pass_fds: tuple = ()) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "fastaccept", *map(str, args)]
        if via:
            proc = start_child(via, "--", *cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
        else:
            proc = subprocess.Popen(cmd, cwd=str(tmp_path), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    pass_fds=pass_fds)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10.0)
        proc.stdout.close()
        proc.stderr.close()


def get(port: int, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return read_to_eof(s)


def port_of(proc: subprocess.Popen) -> int:
    line = read_line(proc.stdout.fileno(), 30.0, proc).decode()
    match = ADDRESS_RE.search(line)
    assert match, line
    return int(match.group(1))


def stderr_until(proc: subprocess.Popen, needle: str, timeout: float = 30.0) -> str:
    """Read the process's stderr line by line up to one that contains needle."""
    seen = []
    while True:
        line = read_line(proc.stderr.fileno(), timeout, proc).decode()
        seen.append(line)
        if needle in line:
            return "".join(seen)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30.0)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("layout", ["shared", "reuseport"])
def test_serve_with_processes(cli, layout):
    proc = cli("serve", "--port", "0", "--workers", "2", "--processes", "2",
               "--listener", layout)
    port = port_of(proc)
    seen = stderr_until(proc, "ready")
    seen += stderr_until(proc, "ready")
    assert "kernel check: effective backlog 2048" in seen
    assert "kernel check: ulimit -n" in seen
    assert ("tcp_migrate_req" in seen) == (layout == "reuseport")
    for _ in range(4):
        assert get(port).endswith(b"\r\n\r\nok")
    status, out, err = stop(proc)
    assert status == 0, err
    assert "stopped: accepted 4, handled 4, handler errors 0" in out
    assert "Traceback" not in err


def test_serve_in_one_process_runs_the_kernel_check(cli):
    proc = cli("serve", "--port", "0", "--workers", "1")
    port = port_of(proc)
    assert get(port).endswith(b"ok")
    status, out, err = stop(proc, signal.SIGINT)
    assert status == 0
    assert "kernel check: effective backlog 2048, net.core.somaxconn" in err
    assert "kernel check: ulimit -n" in err
    assert "supervisor" not in err          # one process: no supervisor


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_with_systemd_socket_activation(cli, processes):
    proc = cli("serve", "--workers", "1", "--processes", processes,
               via="socket_activate.py")
    port = json.loads(read_line(proc.stdout.fileno(), 30.0, proc))["port"]
    assert port_of(proc) == port            # it serves the inherited socket, no bind
    for _ in range(3):
        assert get(port).endswith(b"ok")
    status, out, err = stop(proc)
    assert status == 0, err
    assert "(inherited listener)" in err
    assert "stopped: accepted 3" in out


def test_two_systemd_sockets_are_refused_in_one_line(tmp_path):
    # LISTEN_FDS=2: one listener at 3 and at 4 (dup2 makes both inheritable)
    proc = subprocess.run([sys.executable, "-c",
                           "import os, socket, sys\n"
                           "s = socket.create_server(('127.0.0.1', 0))\n"
                           "os.dup2(s.fileno(), 10); os.dup2(10, 3); os.dup2(10, 4)\n"
                           "os.environ.update(LISTEN_FDS='2', LISTEN_PID=str(os.getpid()))\n"
                           "os.execv(sys.executable, [sys.executable, '-m', 'fastaccept', "
                           "'serve'])\n"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, pass_fds=())
    assert proc.returncode == 2
    assert "systemd passed 2 listening sockets" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_with_an_inherited_fd(cli, processes, no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    try:
        proc = cli("serve", "--workers", "1", "--processes", processes, "--fd",
                   str(lsock.fileno()), pass_fds=(lsock.fileno(),))
        assert port_of(proc) == lsock.getsockname()[1]
        assert get(lsock.getsockname()[1]).endswith(b"ok")
        status, out, err = stop(proc)
        assert status == 0, err
    finally:
        lsock.close()


PROXIED = b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\nGET / HTTP/1.0\r\n\r\n"


@pytest.mark.parametrize("verb", ["serve", "wsgi"])
def test_proxy_protocol_reaches_every_process(cli, tmp_path, verb):
    """--proxy-protocol with --processes 2: each child reads the PROXY
    header (for wsgi, REMOTE_ADDR is its source), and closes direct clients
    unanswered. With one SO_REUSEPORT listener per child, 16 connections
    from 16 ports reach both children (but for 2 in 65536)."""
    if verb == "wsgi":
        (tmp_path / "webapp.py").write_text(
            "def app(environ, start_response):\n"
            "    body = environ['REMOTE_ADDR'].encode()\n"
            "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
            "    return [body]\n")
        args = ["wsgi", "webapp:app", "--chdir", tmp_path]
        answer = b"\r\n\r\n203.0.113.7"
    else:
        args = ["serve"]
        answer = b"\r\n\r\nok"
    proc = cli(*args, "--port", "0", "--workers", "1", "--processes", "2",
               "--listener", "reuseport", "--proxy-protocol")
    port = port_of(proc)
    stderr_until(proc, "ready")
    stderr_until(proc, "ready")
    for _ in range(16):
        with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
            s.sendall(PROXIED)
            assert read_to_eof(s).endswith(answer)
        assert get(port) == b""             # no header: closed, no answer
    status, out, err = stop(proc)
    assert status == 0, err
    assert ("stopped: accepted 32, handled 16" if verb == "serve"
            else "stopped: 16 requests on 32 connections") in out, out


@pytest.mark.parametrize("args", [
    ["--processes", "0"],
    ["--processes", "2", "--workers", "0"],
    ["--processes", "2", "--ring-size", "3"],
    ["--processes", "2", "--graceful-timeout", "-1"],
    ["--processes", "2", "--listener", "none"],
    ["--fd", "999"],
])
def test_bad_process_options_exit_2_before_any_child(cli, args):
    proc = cli("serve", "--port", "0", *args)
    status = proc.wait(timeout=30.0)
    err = proc.stderr.read().decode()
    assert status == 2, err
    assert "Traceback" not in err and "started" not in err


def test_wsgi_processes_import_the_app_after_fork_and_a_reload_reimports_it(cli, tmp_path,
                                                                            wait_for):
    app = tmp_path / "webapp.py"

    def write(body: str) -> None:
        app.write_text("def app(environ, start_response):\n"
                       "    start_response('200 OK', [('Content-Length', "
                       f"'{len(body)}')])\n"
                       f"    return [b'{body}']\n")
    write("one")
    proc = cli("wsgi", "webapp:app", "--port", "0", "--chdir", tmp_path, "--processes", "2",
               "--workers", "2")
    port = port_of(proc)
    stderr_until(proc, "ready")
    stderr_until(proc, "ready")
    assert get(port).endswith(b"\r\n\r\none")
    write("second")         # another size: the import system cannot take the old .pyc
    proc.send_signal(signal.SIGHUP)
    stderr_until(proc, "generation 2 serving")
    wait_for(lambda: get(port).endswith(b"second"), what="the new code served")
    # the old children serve what reached them until they stop accepting:
    # once both have exited, every answer is the new code's
    stderr_until(proc, "generation 1) exited")
    stderr_until(proc, "generation 1) exited")
    assert all(get(port).endswith(b"\r\n\r\nsecond") for _ in range(6))
    status, out, err = stop(proc)
    assert status == 0, err
    assert "requests on" in out


@pytest.mark.slow
def test_wsgi_processes_with_a_broken_app_give_up(cli, tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('at import')\n")
    proc = cli("wsgi", "broken:app", "--port", "0", "--chdir", tmp_path, "--processes", "2")
    port_of(proc)
    # the back-off doubles from 0.5 s: six failures take about 15 s
    status = proc.wait(timeout=60.0)
    err = proc.stderr.read().decode()
    assert status == 3, err
    assert "importing 'broken' raised RuntimeError: at import" in err
    assert "giving up" in err

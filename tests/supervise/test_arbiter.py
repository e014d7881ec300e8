"""The supervisor (fastaccept.supervise.arbiter): children, restarts, signals, stops.

Each test runs children/supervised.py (a supervisor of WSGIServer children)
in a process of its own and follows it through its event lines; see
fa_testutil.SupervisorChild.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

import fastaccept
from fa_testutil import child_pids, connect, process_state, read_to_eof, start_child
from fastaccept.supervise import LAYOUTS

GET = b"GET / HTTP/1.0\r\n\r\n"


def get(address, path: str = "/", timeout: float = 10.0) -> bytes:
    """One HTTP/1.0 request; the whole response."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
        return read_to_eof(s)


def assert_gone(pids, timeout: float = 10.0) -> None:
    """Every pid exited and was reaped (no process, not even a zombie)."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if process_state(p) is not None]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)    # a poll interval; the loop re-checks the processes
        left = [p for p in left if process_state(p) is not None]
    assert not left, f"still there: {[(p, process_state(p)) for p in left]}"


def records(path) -> list:
    """The factory calls children/supervised.py recorded (--record)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- replacing children ----------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_child_killed_is_replaced_and_reaped(supervised, layout):
    sup = supervised("--processes", "2", "--listener", layout)
    assert sup.layout == layout
    first = sup.ready(2)
    victim = first[0]["pid"]
    mark = sup.mark()
    os.kill(victim, signal.SIGKILL)
    gone = sup.next("exited", pid=victim)
    assert gone["code"] == -signal.SIGKILL and not gone["expected"]
    new = sup.next("spawned", since=mark, slot=first[0]["slot"])
    sup.next("ready", pid=new["pid"])
    assert process_state(victim) is None            # reaped, not a zombie
    assert sorted(child_pids(sup.pid)) == sorted([new["pid"], first[1]["pid"]])
    for _ in range(4):
        assert get(sup.address).endswith(b"\r\n\r\nok")
    sup.signal(signal.SIGTERM)
    assert sup.finish()["status"] == 0
    assert_gone(sup.spawned_pids())


def test_no_zombie_when_every_child_dies_at_once(supervised, wait_for):
    sup = supervised("--processes", "3")
    pids = [e["pid"] for e in sup.ready(3)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        sup.next("exited", pid=pid)
    sup.ready(3)

    def no_zombie():
        kids = child_pids(sup.pid)
        return len(kids) == 3 and all(process_state(p) not in (None, "Z") for p in kids)
    wait_for(no_zombie, what="three live children and no zombie")
    assert not set(pids) & set(child_pids(sup.pid))
    sup.signal(signal.SIGINT)       # SIGINT stops as SIGTERM does
    assert sup.finish()["status"] == 0
    assert_gone(sup.spawned_pids())


# -- start failures ------------------------------------------------------------------

def test_children_that_fail_at_start_back_off_and_the_supervisor_gives_up(supervised,
                                                                           tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("")
    record = tmp_path / "calls.jsonl"
    sup = supervised("--processes", "2", "--max-start-failures", "4", "--backoff",
                     "0.1", "--record", record, "--fail-while", flag)
    gave_up = sup.next("gave_up", 30.0)
    assert gave_up["failures"] == 4
    assert "cannot import the application" in gave_up["error"]
    assert sup.finish()["status"] == fastaccept.supervise.EXIT_GAVE_UP
    assert "giving up" in sup.stderr()
    failed = sup.seen("start_failed", slot=gave_up["slot"])
    assert [f["retry_in"] for f in failed] == [0.1, 0.2, 0.4]
    # Not a hot loop: the factory calls of a slot are apart by at least the back-off.
    by_pid = {e["pid"]: e["slot"] for e in sup.seen("spawned")}
    calls = [(r["t"], by_pid[r["pid"]]) for r in records(record)]
    for slot in (0, 1):
        times = sorted(t for t, s in calls if s == slot)
        # the slot that gave up tried 4 times; the other was stopped at its 3rd or 4th
        assert len(times) == 4 if slot == gave_up["slot"] else len(times) in (3, 4), times
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(gap >= want * 0.95 for gap, want in zip(gaps, (0.1, 0.2, 0.4))), gaps
    assert_gone(sup.spawned_pids())


def test_a_child_that_dies_soon_after_ready_counts_as_a_start_failure(supervised):
    sup = supervised("--processes", "2", "--min-uptime", "30", "--backoff", "0.05")
    victim = sup.ready(2)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    failed = sup.next("start_failed")
    assert failed["failures"] == 1 and "after it was ready" in failed["error"]
    sup.ready(1)
    sup.signal(signal.SIGTERM)
    assert sup.finish()["status"] == 0


def test_a_reload_whose_children_fail_keeps_the_old_generation(supervised, tmp_path):
    flag = tmp_path / "broken"
    sup = supervised("--processes", "2", "--fail-while", flag)
    old = sorted(e["pid"] for e in sup.ready(2))
    flag.write_text("")
    sup.signal(signal.SIGHUP)
    failed = sup.next("reload_failed")
    assert failed["generation"] == 2 and "cannot import the application" in failed["error"]
    assert sorted(child_pids(sup.pid)) != [] and set(old) <= set(child_pids(sup.pid))
    assert get(sup.address).endswith(b"\r\n\r\nok")
    flag.unlink()
    sup.signal(signal.SIGHUP)
    switched = sup.next("switched")
    assert switched["generation"] == 3 and sorted(switched["stopping"]) == old
    for pid in old:
        assert sup.next("exited", pid=pid)["expected"]
    assert not sup.seen("start_failed")             # a failed reload is not a start failure
    sup.signal(signal.SIGTERM)
    assert sup.finish()["status"] == 0
    assert_gone(sup.spawned_pids())


# -- signals while children start, and stops ----------------------------------------------

def test_sigterm_while_children_start_stops_at_once(supervised, tmp_path, wait_for):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    record = tmp_path / "calls.jsonl"
    sup = supervised("--processes", "2", "--graceful", "60", "--gate", gate, "--record", record)
    wait_for(lambda: len(records(record)) == 2, what="both children in their factory")
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)
    end = sup.finish()
    assert end["status"] == 0
    # A child still in its factory has accepted nothing: it ends at once, not
    # at the graceful timeout.
    assert time.monotonic() - t0 < 30.0
    assert all(e["code"] == -signal.SIGTERM for e in sup.seen("exited"))
    assert_gone(sup.spawned_pids())


def test_sighup_and_sigttin_while_children_start(supervised, tmp_path, wait_for):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    record = tmp_path / "calls.jsonl"
    sup = supervised("--processes", "2", "--gate", gate, "--record", record)
    wait_for(lambda: len(records(record)) == 2, what="both children in their factory")
    sup.signal(signal.SIGHUP)
    sup.next("reload", generation=2)
    sup.signal(signal.SIGTTIN)
    sup.next("scaled", processes=3)
    wait_for(lambda: len(records(record)) == 5, what="five children in their factory")
    fd = os.open(gate, os.O_WRONLY)     # opens the gate for every child, now and later
    try:
        switched = sup.next("switched", 30.0)
        assert switched["generation"] == 2 and len(switched["pids"]) == 3
        for pid in switched["stopping"]:
            sup.next("exited", pid=pid)
        assert sorted(child_pids(sup.pid)) == sorted(switched["pids"])
        assert get(sup.address).endswith(b"\r\n\r\nok")
        sup.signal(signal.SIGTERM)
        assert sup.finish()["status"] == 0
    finally:
        os.close(fd)
    assert_gone(sup.spawned_pids())


def test_a_child_that_ignores_sigterm_is_killed_at_the_graceful_timeout(supervised):
    sup = supervised("--processes", "2", "--graceful", "1.5", "--block-sigterm")
    pids = [e["pid"] for e in sup.ready(2)]
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)
    end = sup.finish()
    took = time.monotonic() - t0
    assert end["status"] == 0
    codes = {e["pid"]: e["code"] for e in sup.seen("exited")}
    assert codes == {pid: -signal.SIGKILL for pid in pids}
    assert 1.5 <= took < 15.0, took
    assert "did not stop within 1.5 s: SIGKILL" in sup.stderr()
    assert_gone(pids)


def test_a_request_outlasting_the_graceful_timeout_is_cut(supervised):
    sup = supervised("--processes", "2", "--graceful", "1", "--stuck-ms", "60000")
    sup.ready(2)
    stuck = connect(sup.address, b"GET /stuck HTTP/1.0\r\n\r\n")
    try:
        sup.signal(signal.SIGTERM)
        end = sup.finish()
        assert end["status"] == 0
        # the child with the stuck request exits by itself when its shutdown
        # times out, or is killed: either way by the graceful timeout
        assert stuck.recv(100) == b""
    finally:
        stuck.close()
    assert_gone(sup.spawned_pids())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_every_request_accepted_before_the_stop_is_answered(supervised, layout, sig,
                                                            wait_for):
    # 2 processes x 2 workers, 200 ms per request: 24 clients queue up in
    # the kernel and in the children before the stop
    sup = supervised("--processes", "2", "--listener", layout, "--workers", "2",
                     "--sleep-ms", "200")
    sup.ready(2)
    clients = [connect(sup.address, GET, timeout=30.0) for _ in range(24)]
    try:
        sup.signal(sig)
        replies = [read_to_eof(c) for c in clients]
    finally:
        for c in clients:
            c.close()
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.0 200 OK"] * 24
    assert all(r.endswith(b"\r\n\r\nok") for r in replies)
    end = sup.finish()
    assert end["status"] == 0 and end["totals"]["requests"] == 24
    # the listener is closed once everyone let go of it: clients are refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(sup.address, timeout=5.0).close()
    assert_gone(sup.spawned_pids())


# -- scaling ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_sigttin_adds_and_sigttou_removes_a_child(supervised, layout):
    sup = supervised("--processes", "2", "--listener", layout)
    sup.ready(2)
    sup.signal(signal.SIGTTIN)
    assert sup.next("scaled")["processes"] == 3
    added = sup.next("ready", slot=2)
    assert sorted(child_pids(sup.pid)) == sorted(sup.spawned_pids())
    sup.signal(signal.SIGTTOU)
    assert sup.next("scaled")["processes"] == 2
    removed = sup.next("exited", pid=added["pid"])
    assert removed["expected"] and removed["code"] == 0
    sup.signal(signal.SIGTTOU)
    assert sup.next("scaled")["processes"] == 1
    sup.signal(signal.SIGTTOU)              # never below one: a warning, no event
    sup.signal(signal.SIGTTIN)
    assert sup.next("scaled")["processes"] == 2
    assert "one process left: it stays" in sup.stderr()
    for _ in range(4):
        assert get(sup.address).endswith(b"\r\n\r\nok")
    sup.signal(signal.SIGTERM)
    assert sup.finish()["status"] == 0
    assert_gone(sup.spawned_pids())


# -- what a child starts with ------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_children_fork_before_any_server_and_hold_only_their_listener(supervised, tmp_path,
                                                                     layout, wait_for):
    record = tmp_path / "calls.jsonl"
    sup = supervised("--processes", "3", "--listener", layout, "--record", record)
    sup.ready(3)
    calls = records(record)
    assert len(calls) == 3
    listeners = set()
    for call in calls:
        # one thread, no server inherited from the supervisor
        assert call["threads"] == 1 and call["started"] == 0, call
        fds = call["fds"]
        sockets = [t for t in fds.values() if t.startswith("socket:")]
        pipes = [t for fd, t in fds.items() if t.startswith("pipe:") and int(fd) > 2]
        assert sockets == [fds[str(call["listener"])]], fds     # its listener, nothing else
        assert len(pipes) == 1, fds         # its status pipe (stdout is the events' pipe)
        assert not [t for t in fds.values() if "eventpoll" in t], fds   # no supervisor's epoll
        listeners.add(fds[str(call["listener"])])
    assert len(listeners) == (1 if layout == "shared" else 3)
    # the supervisor itself stays single-threaded
    assert len(os.listdir(f"/proc/{sup.pid}/task")) == 1
    sup.signal(signal.SIGTERM)
    assert sup.finish()["status"] == 0


def test_serve_processes_refuses_a_process_with_a_running_server(server_factory):
    server_factory(lambda conn, addr: None)
    with pytest.raises(RuntimeError, match="threads run in this process|already runs"):
        fastaccept.serve_processes(lambda sock: fastaccept.Server(lambda c, a: None, sock=sock),
                                   processes=2)


# -- socket activation ---------------------------------------------------------------------

@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_inherited_listener_is_served(supervised, processes, no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    try:
        sup = supervised("--processes", processes, "--fd", lsock.fileno(),
                         pass_fds=(lsock.fileno(),))
        assert sup.address == lsock.getsockname()
        assert sup.layout == "shared"
        if processes == "2":
            sup.ready(2)
        for _ in range(3):
            assert get(lsock.getsockname()).endswith(b"\r\n\r\nok")
        sup.signal(signal.SIGTERM)
        end = sup.finish()
        assert end["status"] == 0 and end["totals"]["requests"] == 3
        # our copy still listens: the children let go of theirs only
        assert lsock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        lsock.close()


def test_reuseport_with_an_inherited_listener_is_refused(tmp_path, no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    try:
        proc = start_child("supervised.py", "--fd", lsock.fileno(), "--listener", "reuseport",
                           cwd=tmp_path, pass_fds=(lsock.fileno(),), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30.0)
    finally:
        lsock.close()
    assert proc.returncode != 0 and out == b""
    assert b"inherited listener is shared" in err


def test_serve_processes_is_exported():
    assert fastaccept.serve_processes is fastaccept.supervise.serve_processes
    assert "serve_processes" in fastaccept.__all__


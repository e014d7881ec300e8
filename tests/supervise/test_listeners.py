"""fastaccept.supervise.listeners: the layouts, --fd and systemd's LISTEN_FDS."""
from __future__ import annotations

import os
import socket

import pytest

from fastaccept.supervise import listeners
from fastaccept.supervise.listeners import Listeners


def test_shared_gives_every_slot_the_one_socket(no_leaks):
    ls = Listeners.bind("127.0.0.1", 0, 64, "shared")
    try:
        a, b = ls.open_slot(), ls.open_slot()
        assert a is b and ls.sockets == [a]
        assert not listeners.reuses_port(a)
        ls.close_slot(a)                # shared: the supervisor keeps it
        assert a.fileno() >= 0
    finally:
        ls.close()
    assert a.fileno() == -1


def test_reuseport_binds_one_socket_per_slot_on_one_port(no_leaks):
    ls = Listeners.bind("127.0.0.1", 0, 64, "reuseport")
    try:
        socks = [ls.open_slot() for _ in range(3)]
        assert len({s.fileno() for s in socks}) == 3
        assert {s.getsockname() for s in socks} == {ls.address}
        assert all(listeners.reuses_port(s) for s in socks)
        ls.close_slot(socks[2])
        assert socks[2].fileno() == -1 and ls.sockets == socks[:2]
        # the port still takes connections through the others
        socket.create_connection(ls.address, timeout=5).close()
    finally:
        ls.close()
    assert all(s.fileno() == -1 for s in socks)


def test_a_bad_layout_is_refused():
    with pytest.raises(ValueError, match="listener must be one of shared, reuseport"):
        Listeners.bind("127.0.0.1", 0, 64, "per-cpu")


def test_adopt_fd_takes_a_listener_and_makes_it_close_on_exec(no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    fd = os.dup(lsock.fileno())
    os.set_inheritable(fd, True)
    try:
        sock = listeners.adopt_fd(fd)
        assert sock.fileno() == fd and not sock.get_inheritable()
        assert sock.getsockname() == lsock.getsockname()
        sock.close()
    finally:
        lsock.close()


def test_adopt_fd_refuses_what_is_not_a_listener_and_closes_nothing(no_leaks):
    r, w = os.pipe()
    conn = socket.socket()
    try:
        with pytest.raises(ValueError, match="is not a socket"):
            listeners.adopt_fd(r)
        with pytest.raises(ValueError, match="must be bound and listening"):
            listeners.adopt_fd(conn.fileno())
        os.fstat(r)
        assert conn.fileno() >= 0 and os.fstat(conn.fileno())
    finally:
        os.close(r)
        os.close(w)
        conn.close()


def test_from_systemd_reads_and_removes_the_variables(no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    saved = os.dup(3) if _fd_open(3) else None
    try:
        os.dup2(lsock.fileno(), 3)
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web",
               "OTHER": "kept"}
        socks = listeners.from_systemd(env)
        assert [s.fileno() for s in socks] == [3]
        assert socks[0].getsockname() == lsock.getsockname()
        assert env == {"OTHER": "kept"}
        socks[0].detach()
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        lsock.close()


@pytest.mark.parametrize("env", [
    {},
    {"LISTEN_FDS": "1"},
    {"LISTEN_PID": "1", "LISTEN_FDS": "1"},         # meant for another process
    {"LISTEN_PID": "{pid}", "LISTEN_FDS": "0"},
])
def test_from_systemd_finds_nothing_and_still_removes_the_variables(env):
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert listeners.from_systemd(env) == []
    assert not any(k.startswith("LISTEN_") for k in env)


def test_from_systemd_refuses_garbage():
    with pytest.raises(ValueError, match="not numbers"):
        listeners.from_systemd({"LISTEN_PID": "me", "LISTEN_FDS": "1"})


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False

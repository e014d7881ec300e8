"""fastaccept._kernel: what the kernel says about a listening socket and the TCP stack.

listen_queue on live loopback sockets (TCP_INFO); read_tcpext, somaxconn and
tcp_migrate_req on this machine's files and on files in tmp_path given
through their ``path`` argument: a value, a missing file, garbage. (The
bench's raising wrappers: bench/test_runner.py; the monitor's use of
them: test_monitor.py.)
"""
from __future__ import annotations

import os
import socket

import pytest

from fastaccept import _kernel

NETSTAT = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
           "TcpExt: 1 22 33\n"
           "IpExt: InNoRoutes\nIpExt: 4\n")


# -- listen_queue ------------------------------------------------------------------

def test_listen_queue_counts_unaccepted_connections(wait_for):
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        assert _kernel.listen_queue(lsock) == (0, 8)
        clients = [socket.create_connection(lsock.getsockname(), timeout=10) for _ in range(3)]
        try:
            # The handshake completes in the kernel; the count follows it.
            wait_for(lambda: _kernel.listen_queue(lsock)[0] == 3, what="3 queued connections")
            conn, _ = lsock.accept()
            conn.close()
            assert _kernel.listen_queue(lsock) == (2, 8)
        finally:
            for c in clients:
                c.close()


def test_listen_queue_of_a_socket_and_none_for_others(no_leaks, wait_for):
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(9)
        assert _kernel.listen_queue(lsock) == (0, 9)
        clients = []
        try:
            for _ in range(3):
                clients.append(socket.create_connection(lsock.getsockname(), timeout=10.0))
            wait_for(lambda: _kernel.listen_queue(lsock) == (3, 9), 10.0, "TCP_INFO depth 3")
        finally:
            for c in clients:
                c.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
        assert _kernel.listen_queue(idle) is None           # not listening
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert _kernel.listen_queue(udp) is None            # not TCP
    closed = socket.socket()
    closed.close()
    assert _kernel.listen_queue(closed) is None


# -- read_tcpext ------------------------------------------------------------------

def test_read_tcpext_has_the_listen_counters():
    counters = _kernel.read_tcpext()
    assert isinstance(counters["ListenOverflows"], int)
    assert isinstance(counters["ListenDrops"], int)
    assert set(_kernel.TCPEXT_FIELDS) <= set(counters)


def test_read_tcpext_parses_the_tcpext_pair(tmp_path):
    path = tmp_path / "netstat"
    path.write_text(NETSTAT)
    assert _kernel.read_tcpext(str(path)) == {"SyncookiesSent": 1, "ListenOverflows": 22,
                                              "ListenDrops": 33}


def test_read_tcpext_fields_keeps_those_the_kernel_has(tmp_path):
    path = tmp_path / "netstat"
    path.write_text(NETSTAT)
    assert _kernel.read_tcpext(str(path), ("ListenDrops", "NoSuchCounter")) == {
        "ListenDrops": 33}
    assert _kernel.read_tcpext(str(path), _kernel.TCPEXT_FIELDS) == {
        "ListenOverflows": 22, "ListenDrops": 33}


@pytest.mark.parametrize("text", [
    None,                                               # no file
    "IpExt: InNoRoutes\nIpExt: 4\n",                    # no TcpExt group
    "TcpExt: ListenOverflows ListenDrops\n",            # names without values
    "TcpExt: ListenOverflows ListenDrops\nIpExt: 1 2\n",  # values of another group
    "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 many\n",  # garbage
    "",
], ids=["missing", "no-tcpext", "no-values", "other-group", "garbage", "empty"])
def test_read_tcpext_is_empty_when_it_cannot_count(tmp_path, text):
    path = tmp_path / "netstat"
    if text is not None:
        path.write_text(text)
    assert _kernel.read_tcpext(str(path)) == {}
    assert _kernel.read_tcpext(str(path), _kernel.TCPEXT_FIELDS) == {}


# -- sysctls ---------------------------------------------------------------------

def _sysctl(tmp_path, text):
    """A sysctl file in tmp_path holding text (None: no file); its path."""
    path = tmp_path / "sysctl"
    if text is not None:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, value", [("4096\n", 4096), ("128", 128), (" 65535 \n", 65535)])
def test_somaxconn_reads_the_value(tmp_path, text, value):
    assert _kernel.somaxconn(_sysctl(tmp_path, text)) == value


@pytest.mark.parametrize("text", [None, "", "many\n", "4096 4096\n", "0x1000\n"],
                         ids=["missing", "empty", "word", "two", "hex"])
def test_somaxconn_is_none_when_unreadable(tmp_path, text):
    assert _kernel.somaxconn(_sysctl(tmp_path, text)) is None


@pytest.mark.parametrize("text, value", [("1\n", True), ("0\n", False), ("2", True)])
def test_tcp_migrate_req_reads_the_switch(tmp_path, text, value):
    assert _kernel.tcp_migrate_req(_sysctl(tmp_path, text)) is value


@pytest.mark.parametrize("text", [None, "", "on\n", "1 0\n"],
                         ids=["missing", "empty", "word", "two"])
def test_tcp_migrate_req_is_none_where_the_kernel_lacks_it(tmp_path, text):
    assert _kernel.tcp_migrate_req(_sysctl(tmp_path, text)) is None


@pytest.mark.parametrize("read, path, expected", [
    (_kernel.somaxconn, "/proc/sys/net/core/somaxconn", int),
    (_kernel.tcp_migrate_req, "/proc/sys/net/ipv4/tcp_migrate_req", lambda text: int(text) != 0),
], ids=["somaxconn", "tcp_migrate_req"])
def test_sysctl_readers_read_this_machines_file(read, path, expected):
    """Without a path, each reads its sysctl (None where the kernel has none)."""
    if not os.path.exists(path):
        assert read() is None
        return
    with open(path) as f:
        assert read() == expected(f.read())

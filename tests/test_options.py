"""fastaccept._options: the checks every constructor shares, listen() and the cap warning.

Each check returns the value it accepts (converted where it says so), raises
TypeError for a value of the wrong type and ValueError for one out of range,
and the message names the argument and what is allowed. That Server,
TCPServer, the Acceptor and the load generator use them is tested with
each of those (test_server.py, test_tcpserver.py, test_reliability.py,
bench/test_loadgen.py).
"""
from __future__ import annotations

import errno
import logging
import math
import socket
import threading

import pytest

from fa_testutil import has_ipv6_loopback, open_fds
from fastaccept import _kernel, _options
from fastaccept._core import MAX_SHED_RESPONSE, RING_MAX_CAPACITY, RING_MIN_CAPACITY


# -- check_int ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 7, 4096])
def test_check_int_returns_a_value_in_range(value):
    assert _options.check_int("workers", value, 1, 4096) == value


@pytest.mark.parametrize("value", [0, -1, 4097, 2**64])
def test_check_int_refuses_a_value_out_of_range(value):
    with pytest.raises(ValueError, match=rf"^workers must be in \[1, 4096\], got {value}$"):
        _options.check_int("workers", value, 1, 4096)


@pytest.mark.parametrize("value", ["8", 8.0, True, False, None])
def test_check_int_refuses_what_is_not_an_int(value):
    with pytest.raises(TypeError, match=rf"^workers must be an int, got {type(value).__name__}$"):
        _options.check_int("workers", value, 1, 4096)


# -- check_ring_size -----------------------------------------------------------------

@pytest.mark.parametrize("value", [RING_MIN_CAPACITY, 4, 1024, RING_MAX_CAPACITY])
def test_check_ring_size_takes_powers_of_two_in_range(value):
    assert _options.check_ring_size(value) == value


@pytest.mark.parametrize("value", [3, 6, 1000, RING_MAX_CAPACITY - 1])
def test_check_ring_size_refuses_what_is_not_a_power_of_two(value):
    with pytest.raises(ValueError, match=rf"^ring_size must be a power of two, got {value}$"):
        _options.check_ring_size(value)


@pytest.mark.parametrize("value", [0, RING_MIN_CAPACITY // 2, RING_MAX_CAPACITY * 2, -4])
def test_check_ring_size_refuses_a_size_out_of_range(value):
    with pytest.raises(ValueError, match=rf"^ring_size must be in \[{RING_MIN_CAPACITY}, "
                                         rf"{RING_MAX_CAPACITY}\]"):
        _options.check_ring_size(value)


@pytest.mark.parametrize("value", ["8", 8.0, None])
def test_check_ring_size_refuses_what_is_not_an_int(value):
    with pytest.raises(TypeError, match="^ring_size must be an int"):
        _options.check_ring_size(value)


# -- check_timeout --------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), (2, 2.0), (2.5, 2.5),
                                             (_options.MAX_TIMEOUT, _options.MAX_TIMEOUT)])
def test_check_timeout_returns_none_or_seconds_as_a_float(value, expected):
    got = _options.check_timeout(value)
    assert got == expected
    assert got is None or type(got) is float


@pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, _options.MAX_TIMEOUT * 2])
def test_check_timeout_refuses_what_no_socket_or_wait_can_take(value):
    """Negative, NaN and infinite timeouts, and any past MAX_TIMEOUT:
    socket.settimeout() and every wait raise OverflowError there. (inf was
    taken: every connection then failed in settimeout, shutdown() raised.)"""
    with pytest.raises(ValueError, match=r"^timeout must be None or in \[0, 9.22337e\+09\] "
                                         r"seconds, got "):
        _options.check_timeout(value)


@pytest.mark.parametrize("value", ["1", True, b"1"])
def test_check_timeout_refuses_what_is_not_a_number(value):
    with pytest.raises(TypeError, match=rf"^timeout must be None or a number, got "
                                        rf"{type(value).__name__}$"):
        _options.check_timeout(value)


def test_max_timeout_is_what_sockets_and_waits_take(no_leaks):
    assert _options.MAX_TIMEOUT == threading.TIMEOUT_MAX
    with socket.socket() as sock:
        sock.settimeout(_options.MAX_TIMEOUT)
        assert sock.gettimeout() == _options.MAX_TIMEOUT
    lock = threading.Lock()
    assert lock.acquire(timeout=_options.MAX_TIMEOUT)
    with pytest.raises(OverflowError):
        lock.acquire(timeout=_options.MAX_TIMEOUT * 2)


def test_check_timeout_names_the_argument_it_checks():
    with pytest.raises(ValueError, match="^socket_timeout must be"):
        _options.check_timeout(-1, "socket_timeout")
    with pytest.raises(TypeError, match="^socket_timeout must be"):
        _options.check_timeout("1", "socket_timeout")


# -- check_seconds -----------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (10, 10.0), (1e-9, 1e-9)])
def test_check_seconds_returns_a_float_in_the_range(value, expected):
    got = _options.check_seconds("poll_interval", value, 10.0)
    assert got == expected and type(got) is float


def test_check_seconds_takes_none_only_when_allowed():
    assert _options.check_seconds("max_seconds", None, 10.0, allow_none=True) is None
    with pytest.raises(TypeError, match="^max_seconds must be a number of seconds, got NoneType"):
        _options.check_seconds("max_seconds", None, 10.0)


@pytest.mark.parametrize("value", [0, -1, 10.5, math.nan, math.inf, -math.inf])
def test_check_seconds_refuses_a_value_out_of_range(value):
    with pytest.raises(ValueError,
                       match=r"^poll_interval must be in \(0, 10\] seconds, got "):
        _options.check_seconds("poll_interval", value, 10.0)


@pytest.mark.parametrize("allow_none, what", [(False, "a number of seconds"),
                                              (True, "a number of seconds or None")])
@pytest.mark.parametrize("value", ["1", True])
def test_check_seconds_refuses_what_is_not_a_number(value, allow_none, what):
    with pytest.raises(TypeError, match=rf"^poll_interval must be {what}, got "):
        _options.check_seconds("poll_interval", value, 10.0, allow_none=allow_none)


# -- check_overload ------------------------------------------------------------------------

@pytest.mark.parametrize("overload, response, expected", [
    ("queue", b"", ("queue", b"")),
    ("shed", b"", ("shed", b"")),
    ("shed", bytearray(b"503"), ("shed", b"503")),
    ("shed", memoryview(b"503"), ("shed", b"503")),
    ("shed", b"x" * MAX_SHED_RESPONSE, ("shed", b"x" * MAX_SHED_RESPONSE)),
])
def test_check_overload_returns_the_policy_and_bytes(overload, response, expected):
    got = _options.check_overload(overload, response)
    assert got == expected and type(got[1]) is bytes


@pytest.mark.parametrize("overload, response, exc, message", [
    ("drop", b"", ValueError, r"^overload must be 'queue' or 'shed', got 'drop'$"),
    (None, b"", ValueError, r"^overload must be 'queue' or 'shed', got None$"),
    ("shed", "503", TypeError, r"^shed_response must be bytes, got str$"),
    ("shed", b"x" * (MAX_SHED_RESPONSE + 1), ValueError,
     rf"^shed_response must be at most {MAX_SHED_RESPONSE} bytes, got {MAX_SHED_RESPONSE + 1}$"),
    ("queue", b"503", ValueError, r"^shed_response is sent only with overload='shed'$"),
])
def test_check_overload_refuses(overload, response, exc, message):
    with pytest.raises(exc, match=message):
        _options.check_overload(overload, response)


# -- check_proxy -----------------------------------------------------------------------------

@pytest.mark.parametrize("proxy, timeout, expected", [
    (False, _options.DEFAULT_PROXY_TIMEOUT, (False, 3.0)),
    (True, None, (True, None)),
    (True, 1, (True, 1.0)),
    (True, _options.MAX_PROXY_TIMEOUT, (True, _options.MAX_PROXY_TIMEOUT)),
])
def test_check_proxy_returns_the_flag_and_float_seconds(proxy, timeout, expected):
    got = _options.check_proxy(proxy, timeout)
    assert got == expected and (got[1] is None or type(got[1]) is float)


@pytest.mark.parametrize("proxy, timeout, exc, message", [
    (1, 3.0, TypeError, r"^proxy_protocol must be a bool, got int$"),
    (None, 3.0, TypeError, r"^proxy_protocol must be a bool, got NoneType$"),
    (True, 0, ValueError, r"^proxy_timeout must be in \(0, 604800\] seconds, got 0$"),
    (True, math.nan, ValueError, r"^proxy_timeout must be in \(0, 604800\] seconds, got nan$"),
    (True, _options.MAX_PROXY_TIMEOUT * 2, ValueError, r"^proxy_timeout must be in "),
    (True, "3", TypeError, r"^proxy_timeout must be a number of seconds or None, got str$"),
])
def test_check_proxy_refuses(proxy, timeout, exc, message):
    with pytest.raises(exc, match=message):
        _options.check_proxy(proxy, timeout)


def test_max_proxy_timeout_is_what_the_acceptor_takes(no_leaks):
    from fastaccept._core import Acceptor
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        acceptor = Acceptor(sock.fileno(), proxy=True, proxy_timeout=_options.MAX_PROXY_TIMEOUT)
        try:
            assert acceptor.proxy_timeout == _options.MAX_PROXY_TIMEOUT
        finally:
            acceptor.close()


# -- check_listening -------------------------------------------------------------------------

def test_check_listening_returns_the_socket(no_leaks):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert _options.check_listening(sock) is sock


@pytest.mark.parametrize("value", [5, None, object()])
def test_check_listening_refuses_what_is_not_a_socket(value):
    with pytest.raises(TypeError, match="^sock must be a socket.socket, got "):
        _options.check_listening(value)


def test_check_listening_refuses_closed_udp_and_unlistening_sockets(no_leaks):
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="^sock is closed$"):
        _options.check_listening(closed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="^sock must be SOCK_STREAM"):
            _options.check_listening(udp)
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match=r"^sock must be bound and listening"):
            _options.check_listening(tcp)


# -- listen -----------------------------------------------------------------------------------

def test_listen_binds_listens_and_reuses_the_address(no_leaks):
    sock = _options.listen("127.0.0.1", 0, 7)
    try:
        host, port = sock.getsockname()
        assert (sock.family, host) == (socket.AF_INET, "127.0.0.1") and port != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        assert _kernel.listen_queue(sock) == (0, 7)
        with socket.create_connection((host, port), timeout=10.0):
            sock.settimeout(10.0)
            conn, _ = sock.accept()
            conn.close()
    finally:
        sock.close()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_listen_on_ipv6_loopback(no_leaks):
    with _options.listen("::1", 0, 4) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[0] == "::1"


def test_listen_with_reuse_port_shares_the_port(no_leaks):
    first = _options.listen("127.0.0.1", 0, 8, reuse_port=True)
    try:
        port = first.getsockname()[1]
        with _options.listen("127.0.0.1", port, 8, reuse_port=True) as second:
            assert second.getsockname()[1] == port
            for sock in (first, second):
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        first.close()


@pytest.mark.parametrize("reuse_port", [False, True])
def test_listen_on_a_taken_port_raises_and_leaks_nothing(no_leaks, reuse_port):
    """Without SO_REUSEPORT on the first listener, a second one cannot bind,
    with or without it; the socket made for the attempt is closed."""
    with _options.listen("127.0.0.1", 0, 8) as taken:
        fds = open_fds()
        with pytest.raises(OSError) as exc:
            _options.listen("127.0.0.1", taken.getsockname()[1], 8, reuse_port=reuse_port)
        assert exc.value.errno == errno.EADDRINUSE
        assert open_fds() == fds


# -- warn_if_capped ---------------------------------------------------------------------------

def _cap_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "fastaccept" and r.levelno == logging.WARNING
            and "somaxconn" in r.getMessage()]


@pytest.mark.parametrize("somaxconn, backlog, warned", [
    (128, 129, ["backlog 129 is capped by net.core.somaxconn: the effective backlog is 128"]),
    (128, 128, []),
    (128, 1, []),
    (None, 2**31 - 1, []),          # unreadable: nothing to say
])
def test_warn_if_capped_warns_only_above_somaxconn(monkeypatch, caplog, somaxconn, backlog,
                                                   warned):
    caplog.set_level(logging.INFO, logger="fastaccept")
    monkeypatch.setattr(_kernel, "somaxconn", lambda: somaxconn)
    _options.warn_if_capped(backlog)
    assert _cap_warnings(caplog) == warned


def test_listen_warns_when_the_backlog_is_capped(monkeypatch, caplog, no_leaks):
    caplog.set_level(logging.INFO, logger="fastaccept")
    monkeypatch.setattr(_kernel, "somaxconn", lambda: 4)
    with _options.listen("127.0.0.1", 0, 8):
        pass
    assert _cap_warnings(caplog) == [
        "backlog 8 is capped by net.core.somaxconn: the effective backlog is 4"]
    monkeypatch.setattr(_kernel, "somaxconn", lambda: 8)
    with _options.listen("127.0.0.1", 0, 8):
        pass
    assert len(_cap_warnings(caplog)) == 1

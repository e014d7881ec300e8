"""fastaccept.monitor and ``python -m fastaccept monitor``: the accept-queue depth
of any listening socket, from sock_diag netlink and from /proc/net.

The kernel readers it shares with the server and the bench (listen_queue,
read_tcpext) are tested in test_kernel.py."""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
from typing import Any, Iterator, List

import pytest

from fa_testutil import has_ipv6_loopback, run_cli
from fastaccept import _kernel, monitor

#: Both ways of reading sockets; sock_diag is skipped where the kernel refuses it.
SOURCES = ["sock_diag", "proc"]


def _has_sock_diag() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            monitor.snapshot(s.getsockname()[1], source="sock_diag")
        return True
    except OSError:
        return False


HAS_SOCK_DIAG = _has_sock_diag()
HAS_IPV6 = has_ipv6_loopback()


@pytest.fixture(params=SOURCES)
def source(request) -> str:
    if request.param == "sock_diag" and not HAS_SOCK_DIAG:
        pytest.skip("sock_diag netlink is refused here")
    return request.param


class Listener:
    """A plain listening socket that never calls accept(), and its clients."""

    def __init__(self, family: int, host: str, backlog: int, port: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.address = self.sock.getsockname()
        self.port = self.address[1]
        self.clients: List[socket.socket] = []

    def connect(self, n: int) -> None:
        for _ in range(n):
            c = socket.socket(self.sock.family, socket.SOCK_STREAM)
            self.clients.append(c)
            c.settimeout(10.0)
            c.connect(self.address[:2])     # returns once the handshake is done

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.sock.close()


@pytest.fixture
def listen(no_leaks) -> Iterator[Any]:
    """Return make(family, host, backlog, port=0) -> Listener; all closed in teardown."""
    made: List[Listener] = []

    def make(family: int = socket.AF_INET, host: str = "127.0.0.1", backlog: int = 16,
             port: int = 0) -> Listener:
        made.append(Listener(family, host, backlog, port))
        return made[-1]

    yield make
    for lst in made:
        lst.close()


# -- snapshot ------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 5, 12])
def test_depth_equals_the_connections_nobody_accepted(listen, source, wait_for, n):
    lst = listen(backlog=16)
    lst.connect(n)
    # connect() returns when the client got the SYN-ACK; the server side
    # queues the connection when the final ACK lands, a moment later.
    snap = wait_for(lambda: (s := monitor.snapshot(lst.port, source=source))["queue"] == n
                    and s, 10.0, f"depth {n}")
    assert [(e["address"], e["family"], e["queue"]) for e in snap["listeners"]] == [
        ("127.0.0.1", "IPv4", n)]
    assert snap["established"] == n       # the server-side ends, queued included
    assert snap["syn_recv"] == 0
    if source == "sock_diag":
        assert snap["source"] == "sock_diag"
        assert snap["backlog"] == 16 and snap["listeners"][0]["backlog"] == 16
    else:
        assert snap["source"] == "/proc/net/tcp"
        assert snap["backlog"] is None      # /proc does not show it
    assert snap["listeners"][0]["inode"] == os.fstat(lst.sock.fileno()).st_ino


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_ipv6_and_ipv4_listeners_on_one_port(listen, source, wait_for):
    v4 = listen(backlog=8)
    v6 = listen(socket.AF_INET6, "::1", backlog=5, port=v4.port)
    v4.connect(2)
    v6.connect(3)
    snap = wait_for(lambda: (s := monitor.snapshot(v4.port, source=source))["queue"] == 5
                    and s, 10.0, "depth 5")
    got = sorted((e["address"], e["family"], e["queue"], e["backlog"])
                 for e in snap["listeners"])
    if source == "sock_diag":
        assert got == [("127.0.0.1", "IPv4", 2, 8), ("::1", "IPv6", 3, 5)]
        assert snap["backlog"] == 13
    else:
        assert got == [("127.0.0.1", "IPv4", 2, None), ("::1", "IPv6", 3, None)]
    assert snap["established"] == 5
    line = monitor.format_line(snap)
    assert "accept queue 5/" in line and "::1 3/" in line and "127.0.0.1 2/" in line


def test_accepting_drains_the_depth(listen, source, wait_for):
    lst = listen(backlog=16)
    lst.connect(4)
    wait_for(lambda: monitor.snapshot(lst.port, source=source)["queue"] == 4, 10.0, "depth 4")
    lst.sock.settimeout(10.0)
    conn, _ = lst.sock.accept()
    conn.close()
    assert monitor.snapshot(lst.port, source=source)["queue"] == 3


def test_nothing_listening(source):
    # A bound socket that does not listen reserves a port nobody listens on.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        snap = monitor.snapshot(port, source=source)
        assert snap["listeners"] == [] and snap["queue"] == 0 and snap["backlog"] == 0
        assert "nothing listening" in monitor.format_line(snap)


def test_monitor_shows_the_kernel_readers():
    """listen_queue and read_tcpext are the monitor's API too: _kernel's own."""
    assert {"listen_queue", "read_tcpext"} <= set(monitor.__all__)
    assert monitor.listen_queue is _kernel.listen_queue
    assert monitor.read_tcpext is _kernel.read_tcpext


def test_tcpext_counters_are_read_and_labelled(listen):
    snap = monitor.snapshot(listen().port)
    assert snap["counters_scope"] == "namespace"
    ext = _kernel.read_tcpext()
    assert isinstance(ext.get("ListenOverflows"), int)
    assert isinstance(ext.get("ListenDrops"), int)
    # read later, counters that only grow
    assert ext["ListenOverflows"] >= snap["listen_overflows"] >= 0
    assert ext["ListenDrops"] >= snap["listen_drops"] >= 0


@pytest.mark.parametrize("port, exc", [(0, ValueError), (65536, ValueError), ("80", TypeError),
                                       (True, TypeError)])
def test_snapshot_rejects_bad_ports(port, exc):
    with pytest.raises(exc, match="port"):
        monitor.snapshot(port)


def test_snapshot_rejects_a_bad_source():
    with pytest.raises(ValueError, match="source"):
        monitor.snapshot(80, source="ss")


# -- /proc parsing on sample files ---------------------------------------------------

def _hex4(addr: str) -> str:
    return "%08X" % struct.unpack("=I", socket.inet_pton(socket.AF_INET, addr))[0]


def _hex6(addr: str) -> str:
    raw = socket.inet_pton(socket.AF_INET6, addr)
    return "".join("%08X" % w for w in struct.unpack("=4I", raw))


def _row(i: int, local: str, rem: str, state: int, rx: int, inode: int) -> str:
    return (f"{i:4d}: {local} {rem} {state:02X} 00000000:{rx:08X} 00:00000000 00000000  "
            f"1000        0 {inode} 1 0000000000000000 100 0 0 10 0")


NETSTAT = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\n"
           "TcpExt: 0 {over} {drops} 7\n"
           "IpExt: InNoRoutes InOctets\n"
           "IpExt: 0 12345\n")


def test_proc_files_parsed(tmp_path):
    port = 8080
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...\n"
    tcp = [
        _row(0, f"{_hex4('127.0.0.1')}:{port:04X}", "00000000:0000", 0x0A, 7, 111),
        # a client whose remote port is 8080: not this port's
        _row(1, f"{_hex4('127.0.0.1')}:C000", f"{_hex4('127.0.0.1')}:{port:04X}", 0x01, 0, 222),
        _row(2, f"{_hex4('127.0.0.1')}:{port:04X}", f"{_hex4('127.0.0.1')}:C000", 0x01, 0, 333),
        _row(3, f"{_hex4('10.1.2.3')}:{port:04X}", f"{_hex4('10.9.9.9')}:D000", 0x03, 0, 0),
        _row(4, f"{_hex4('0.0.0.0')}:1F91", "00000000:0000", 0x0A, 3, 444),    # port 8081
    ]
    tcp6 = [_row(0, f"{_hex6('::1')}:{port:04X}", f"{_hex6('::')}:0000", 0x0A, 2, 555),
            _row(1, f"{_hex6('fe80::1:2')}:{port:04X}", f"{_hex6('fe80::9')}:E000", 0x01, 0, 0)]
    (tmp_path / "tcp").write_text(header + "\n".join(tcp) + "\n")
    (tmp_path / "tcp6").write_text(header + "\n".join(tcp6) + "\n")
    (tmp_path / "netstat").write_text(NETSTAT.format(over=40, drops=45))
    snap = monitor.snapshot(port, proc_net=str(tmp_path), source="proc")
    assert [(e["address"], e["family"], e["queue"], e["backlog"], e["uid"], e["inode"])
            for e in snap["listeners"]] == [("127.0.0.1", "IPv4", 7, None, 1000, 111),
                                            ("::1", "IPv6", 2, None, 1000, 555)]
    assert snap["queue"] == 9 and snap["backlog"] is None
    assert snap["established"] == 2 and snap["syn_recv"] == 1
    assert snap["listen_overflows"] == 40 and snap["listen_drops"] == 45
    assert monitor.snapshot(8081, proc_net=str(tmp_path), source="proc")["queue"] == 3


def test_missing_tcp6_and_netstat(tmp_path):
    (tmp_path / "tcp").write_text("header\n" + _row(0, f"{_hex4('127.0.0.1')}:0050",
                                                    "00000000:0000", 0x0A, 1, 9) + "\n")
    snap = monitor.snapshot(80, proc_net=str(tmp_path), source="proc")
    assert snap["queue"] == 1
    assert snap["listen_overflows"] is None and snap["listen_drops"] is None


def test_rates():
    a = {"time": 10.0, "listen_overflows": 100, "listen_drops": 110}
    b = {"time": 12.0, "listen_overflows": 160, "listen_drops": 170}
    assert monitor.rates(a, b) == {"listen_overflows_per_s": 30.0, "listen_drops_per_s": 30.0}
    # a missing counter, a reset, or no time passed: no rate
    assert monitor.rates(a, dict(b, listen_drops=None))["listen_drops_per_s"] is None
    assert monitor.rates(b, dict(a, time=13.0))["listen_overflows_per_s"] is None
    assert monitor.rates(a, a)["listen_overflows_per_s"] is None


# -- on a fastaccept server ---------------------------------------------------

def test_monitor_agrees_with_server_stats_when_workers_block(server_factory, wait_for):
    release = threading.Event()
    server = server_factory(lambda c, a: release.wait(30.0), workers=1, ring_size=2,
                            backlog=32, dispatch="accept")
    clients = []
    try:
        for _ in range(6):
            clients.append(socket.create_connection(server.address, timeout=10.0))
        # 1 in the handler, 2 in the ring, 3 left in the kernel queue
        wait_for(lambda: server.stats()["kernel_queue_depth"] == 3, 10.0, "3 in the kernel")
        snap = monitor.snapshot(server.address[1])
        assert snap["queue"] == 3
        if snap["source"] == "sock_diag":
            assert snap["backlog"] == 32 == server.stats()["kernel_backlog"]
        assert snap["established"] == 6
    finally:
        release.set()
        for c in clients:
            c.close()
    wait_for(lambda: monitor.snapshot(server.address[1])["queue"] == 0, 10.0, "a drained queue")


# -- the command line ----------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_main_once_json(listen, wait_for):
    lst = listen(backlog=16)
    lst.connect(4)
    wait_for(lambda: monitor.snapshot(lst.port)["queue"] == 4, 10.0, "depth 4")
    out = io.StringIO()
    assert monitor.main(lst.port, once=True, as_json=True, interval=0.05, out=out) == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert rec["queue"] == 4 and rec["peak_queue"] == 4 and rec["port"] == lst.port
    assert rec["listen_overflows_per_s"] is not None and rec["listen_overflows_per_s"] >= 0
    assert rec["counters_scope"] == "namespace"


def test_main_once_without_interval_has_no_rates(listen):
    lst = listen()
    out = io.StringIO()
    assert monitor.main(lst.port, once=True, as_json=True, interval=0, out=out) == 0
    rec = json.loads(out.getvalue())
    assert rec["listen_overflows_per_s"] is None and rec["queue"] == 0


def test_main_live_lines_and_in_place_redraw(listen, wait_for):
    lst = listen(backlog=16)
    lst.connect(2)
    wait_for(lambda: monitor.snapshot(lst.port)["queue"] == 2, 10.0, "depth 2")
    plain = io.StringIO()
    assert monitor.main(lst.port, interval=0.01, count=3, out=plain) == 0
    lines = plain.getvalue().splitlines()
    assert len(lines) == 3
    assert all(f"port {lst.port}: accept queue 2/" in line for line in lines)
    assert "ListenOverflows -" in lines[0] and "ListenOverflows -" not in lines[1]
    tty = Tty()
    assert monitor.main(lst.port, interval=0.01, count=2, out=tty) == 0
    text = tty.getvalue()
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and text.endswith("\n")
    assert text.count("\n") == 1        # one line, redrawn


@pytest.mark.parametrize("interval", [-1.0, float("nan"), float("inf")])
def test_main_refuses_an_interval_it_cannot_sleep(listen, interval):
    """--interval inf used to end in OverflowError from time.sleep()."""
    with pytest.raises(ValueError, match="interval must be >= 0"):
        monitor.main(listen().port, interval=interval, count=2, out=io.StringIO())


def test_main_nothing_listening_exits_1(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = io.StringIO()
        assert monitor.main(port, once=True, out=out) == 1
    assert out.getvalue() == ""
    assert f"nothing listens on TCP port {port}" in capsys.readouterr().err


def test_cli_monitor_once(listen, wait_for, tmp_path):
    lst = listen(backlog=16)
    lst.connect(3)
    wait_for(lambda: monitor.snapshot(lst.port)["queue"] == 3, 10.0, "depth 3")
    run = run_cli("monitor", lst.port, "--once", "--interval", "0.05", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"port {lst.port}: accept queue 3/" in run.stdout
    run = run_cli("monitor", lst.port, "--json", "--count", "2", "--interval", "0.01",
                  "--source", "proc", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    recs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["queue"] for r in recs] == [3, 3]
    assert recs[0]["source"] == "/proc/net/tcp"


def test_cli_monitor_errors(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        run = run_cli("monitor", port, "--once", "--interval", "0", cwd=tmp_path)
    assert run.returncode == 1
    assert "nothing listens on TCP port" in run.stderr
    run = run_cli("monitor", "0", cwd=tmp_path)
    assert run.returncode == 2 and "port must be in [1, 65535]" in run.stderr

"""End to end with a real balancer: HAProxy (Debian's haproxy) on loopback,
in TCP mode, in front of tiny Python TCP servers this test starts, sends the
PROXY header with send-proxy (v1) and send-proxy-v2 (v2, also with the
crc32c and unique-id options), over IPv4 and, where the machine has it,
IPv6. Each server captures the bytes it receives; the parser must find in
them the client's real loopback address and port (what the client's
getsockname() says), the frontend's address as the destination, and the
client's bytes right after the header. Health checks with send-proxy-v2
arrive as LOCAL headers, with send-proxy as a TCP4 line of the check
connection's own addresses.

Then the same balancer in front of a WSGIServer(proxy_protocol=True): the
application's REMOTE_ADDR and REMOTE_PORT are the client's (not haproxy's
own connection to the server), for send-proxy and send-proxy-v2, two
requests on one kept connection included; haproxy's HTTP health checks
(LOCAL headers with send-proxy-v2) are answered with the real peer as
REMOTE_ADDR; no connection is refused or timed out.

Skipped, saying so, where haproxy is not installed (.ci/run installs it).
All traffic stays on 127.0.0.1 and ::1; haproxy runs in the foreground as a
child of the test and is stopped by its pid.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from fa_testutil import has_ipv6_loopback
from fastaccept import _core as core

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed "
                                "(apt-get install haproxy; .ci/run installs it)")

DEADLINE = 10.0


def listening_socket(host: str) -> socket.socket:
    """A socket listening on (host, 0) for haproxy to inherit (``bind fd@N``):
    the port is taken from the start, so nothing can bind it between the
    choice and haproxy's start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        s.listen(128)
        s.set_inheritable(True)
    except BaseException:
        s.close()
        raise
    return s


class CaptureServer:
    """A TCP server on 127.0.0.1:0 that keeps, for each connection, every
    byte received until the peer closes, a line end after the PROXY
    header arrives, or a second passes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.captured: List[bytes] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                data = self._read(conn)
            with self.lock:
                self.captured.append(data)

    @staticmethod
    def _read(conn: socket.socket) -> bytes:
        conn.settimeout(0.2)
        data = b""
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:         # a health check resets its connection
                break
            if not chunk:
                break
            data += chunk
            rc, _ = core.parse_proxy_header(data)
            if rc < 0 or (rc > 0 and data.endswith(b"\n") and len(data) > rc):
                break
        return data

    def find(self, payload: bytes) -> Optional[bytes]:
        with self.lock:
            for data in self.captured:
                rc, _ = core.parse_proxy_header(data)
                if rc > 0 and data[rc:] == payload:
                    return data
        return None

    def headers(self) -> List[bytes]:
        with self.lock:
            return list(self.captured)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


class HAProxy:
    """``haproxy -db`` in TCP mode with the ``listen`` sections given, a child
    of the test, its log in ``tmp``."""

    def __init__(self, tmp: Path, sections: List[str], listeners: List[socket.socket]) -> None:
        config = tmp / "haproxy.cfg"
        config.write_text(
            "global\n    maxconn 200\n\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n"
            "    timeout server 5s\n    timeout check 2s\n\n" + "\n".join(sections))
        self.log = open(tmp / "haproxy.log", "w+")
        try:
            self.proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(config)],
                                         stdout=self.log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         pass_fds=[s.fileno() for s in listeners])
        finally:
            # haproxy's alone now: once it exits, a connect is refused
            for sock in listeners:
                sock.close()

    def connect(self, host: str, port: int) -> socket.socket:
        """A client connection to (host, port), one of haproxy's inherited
        listeners: it listens from the start, so only an exited haproxy
        refuses it."""
        try:
            return socket.create_connection((host, port), timeout=2)
        except OSError as exc:
            raise AssertionError(f"cannot connect to haproxy on {host} {port} "
                                 f"(exit {self.proc.poll()}):\n{self.read_log()}") from exc

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def listen_section(name: str, sock: socket.socket, server: str, unique: str = "",
                   check: str = "") -> str:
    """A ``listen`` section on the inherited listening socket sock, one server line."""
    return (f"listen {name}\n    bind fd@{sock.fileno()}\n{check}{unique}"
            f"    server s {server}\n")


# name: (bind host, server line options)
FRONTENDS = {
    "v1": ("127.0.0.1", "send-proxy"),
    "v2": ("127.0.0.1", "send-proxy-v2"),
    "v2-options": ("127.0.0.1", "send-proxy-v2 proxy-v2-options crc32c,unique-id"),
    "v1-ipv6": ("::1", "send-proxy"),
    "v2-ipv6": ("::1", "send-proxy-v2"),
}
CHECKS = {"check-v1": "send-proxy", "check-v2": "send-proxy-v2"}


class Balancer:
    """HAProxy with a frontend per FRONTENDS and CHECKS entry, each in front
    of its own CaptureServer."""

    def __init__(self, tmp: Path) -> None:
        ipv6 = has_ipv6_loopback()
        self.servers: Dict[str, CaptureServer] = {}
        self.ports: Dict[str, Tuple[str, int]] = {}
        sections = []
        listeners: List[socket.socket] = []
        for name, (host, options) in FRONTENDS.items():
            if ":" in host and not ipv6:
                continue
            srv = self.servers[name] = CaptureServer()
            listeners.append(listening_socket(host))
            self.ports[name] = (host, int(listeners[-1].getsockname()[1]))
            unique = "    unique-id-format %ci:%cp\n" if "unique-id" in options else ""
            sections.append(listen_section(name, listeners[-1],
                                           f"127.0.0.1:{srv.port} {options}", unique=unique))
        for name, options in CHECKS.items():
            srv = self.servers[name] = CaptureServer()
            listeners.append(listening_socket("127.0.0.1"))
            sections.append(listen_section(name, listeners[-1], f"127.0.0.1:{srv.port} "
                                           f"{options} check inter 300ms"))
        self.haproxy = HAProxy(tmp, sections, listeners)
        self.ipv6 = ipv6

    def connect(self, name: str) -> socket.socket:
        """A client connection through frontend name, once haproxy listens."""
        return self.haproxy.connect(*self.ports[name])

    def close(self) -> None:
        self.haproxy.close()
        for srv in self.servers.values():
            srv.close()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    b = Balancer(tmp_path_factory.mktemp("haproxy"))
    try:
        yield b
    finally:
        b.close()


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_balancer_header_gives_the_client_address(balancer: Balancer, name: str,
                                                  wait_for: Any) -> None:
    if name not in balancer.ports:
        pytest.skip("no IPv6 loopback on this machine")
    client = balancer.connect(name)
    with client:
        payload = f"hello from {name} {client.getsockname()[1]}\n".encode()
        client.sendall(payload)
        data = wait_for(lambda: balancer.servers[name].find(payload), DEADLINE,
                        f"{name}'s bytes at the server")
        local = client.getsockname()
    rc, h = core.parse_proxy_header(data)
    assert rc > 0 and h is not None, (rc, data)
    assert data[rc:] == payload
    host, port = balancer.ports[name]
    ipv6 = ":" in host
    assert h["version"] == (2 if name.startswith("v2") else 1)
    assert h["command"] == "PROXY"
    assert h["family"] == ("TCP6" if ipv6 else "TCP4")
    assert h["src"][:2] == local[:2], (h, local)
    assert h["dst"][:2] == (host, port)
    if ipv6:
        assert h["src"][2:] == (0, 0)
    if name == "v2-options":
        assert h["crc32c"] is True
        types = [t for t, _ in h["tlvs"]]
        assert 0x03 in types and 0x05 in types
        unique_id = dict(h["tlvs"])[0x05]
        assert unique_id == f"127.0.0.1:{local[1]}".encode(), unique_id
    # and the same bytes arriving a byte at a time
    for k in range(rc):
        assert core.parse_proxy_header(data[:k])[0] == 0
    assert core.parse_proxy_header(data[:rc]) == (rc, h)


@pytest.mark.parametrize("name", list(CHECKS))
def test_health_checks(balancer: Balancer, name: str, wait_for: Any) -> None:
    """send-proxy-v2 checks are LOCAL (the connection's own addresses stand);
    send-proxy checks carry the check connection's own addresses (spec
    §2.1: a getsockname()/getpeername() pair), so the destination is the
    capturing server."""
    srv = balancer.servers[name]
    data = wait_for(srv.headers, DEADLINE, f"a health check on {name}")[0]
    rc, h = core.parse_proxy_header(data)
    assert rc > 0 and h is not None, (rc, data)
    if name == "check-v2":
        assert (h["version"], h["command"], h["family"]) == (2, "LOCAL", "UNKNOWN")
        assert h["src"] is None and h["dst"] is None
    else:
        assert (h["version"], h["command"], h["family"]) == (1, "PROXY", "TCP4")
        assert h["src"][0] == "127.0.0.1" and h["dst"] == ("127.0.0.1", srv.port)


# -- a WSGIServer behind it ----------------------------------------------------------

class WhoAmI:
    """A WSGI application answering "REMOTE_ADDR REMOTE_PORT PATH_INFO" and
    keeping each (PATH_INFO, REMOTE_ADDR) it saw."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, str]] = []

    def __call__(self, environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        self.seen.append((environ["PATH_INFO"], environ["REMOTE_ADDR"]))
        out = (f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} "
               f"{environ['PATH_INFO']}").encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out)))])
        return [out]


#: name: (bind host, server line options); the v2 ones check the server over HTTP
WSGI_FRONTENDS = {
    "wsgi-v1": ("127.0.0.1", "send-proxy"),
    "wsgi-v2": ("127.0.0.1", "send-proxy-v2"),
    "wsgi-v1-ipv6": ("::1", "send-proxy"),
    "wsgi-v2-ipv6": ("::1", "send-proxy-v2"),
}
HTTP_CHECK = ("    option httpchk\n"
              "    http-check send meth GET uri /health ver HTTP/1.1 hdr Host lb\n")


@pytest.fixture
def wsgi_balancer(tmp_path: Path, wsgi_factory: Any
                  ) -> Iterator[Tuple[Any, WhoAmI, HAProxy, Dict[str, Tuple[str, int]]]]:
    """(a WSGIServer(proxy_protocol=True), its WhoAmI application, haproxy in
    front of it, {frontend name: (host, port)})."""
    app = WhoAmI()
    server = wsgi_factory(app, proxy_protocol=True)
    ipv6 = has_ipv6_loopback()
    ports = {}
    sections = []
    listeners: List[socket.socket] = []
    for name, (host, options) in WSGI_FRONTENDS.items():
        if ":" in host and not ipv6:
            continue
        listeners.append(listening_socket(host))
        ports[name] = (host, int(listeners[-1].getsockname()[1]))
        check = ""
        if "v2" in options:
            check, options = HTTP_CHECK, options + " check inter 200ms"
        sections.append(listen_section(name, listeners[-1],
                                       f"127.0.0.1:{server.address[1]} {options}",
                                       check=check))
    haproxy = HAProxy(tmp_path, sections, listeners)
    try:
        yield server, app, haproxy, ports
    finally:
        haproxy.close()


def http_exchange(client: socket.socket, paths: List[str]) -> List[bytes]:
    """Send a GET for each path on the connection client, one after the
    other's response (the last with Connection: close), and return each
    response's body (Content-Length framed)."""
    bodies = []
    for i, path in enumerate(paths):
        close = "Connection: close\r\n" if i == len(paths) - 1 else ""
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: fa\r\n{close}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(4096)
            assert chunk, f"EOF before the response head: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            chunk = client.recv(4096)
            assert chunk, "EOF in the body"
            body += chunk
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("name", list(WSGI_FRONTENDS))
def test_wsgi_remote_addr_behind_haproxy(wsgi_balancer: Tuple[Any, WhoAmI, HAProxy, Dict],
                                         name: str, wait_for: Any) -> None:
    server, app, haproxy, ports = wsgi_balancer
    if name not in ports:
        pytest.skip("no IPv6 loopback on this machine")
    with haproxy.connect(*ports[name]) as client:
        client.settimeout(DEADLINE)
        host, port = client.getsockname()[:2]
        # two requests on one connection: one PROXY header, both name the
        # client, not haproxy's own connection to the server
        assert http_exchange(client, ["/a", "/b"]) == [f"{host} {port} /a".encode(),
                                                       f"{host} {port} /b".encode()]
    # haproxy's HTTP checks with send-proxy-v2 send LOCAL headers: REMOTE_ADDR
    # is the connection's own peer, haproxy on 127.0.0.1
    checks = wait_for(lambda: [a for p, a in app.seen if p == "/health"], DEADLINE,
                      "a health check answered")
    assert set(checks) == {"127.0.0.1"}
    st = wait_for(lambda: (s := server.stats())["conns_open"] == 0 and s, DEADLINE,
                  "the connections to close")
    assert st["proxy_rejected"] == {} and st["proxy_timeouts"] == 0, haproxy.read_log()
    assert st["http_rejected"] == {} and st["app_errors"] == 0

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
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

from fastaccept import _core as core

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed "
                                "(apt-get install haproxy; .ci/run installs it)")

DEADLINE = 10.0
T = TypeVar("T")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    def __init__(self, tmp: Path) -> None:
        ipv6 = has_ipv6_loopback()
        self.servers: Dict[str, CaptureServer] = {}
        self.ports: Dict[str, Tuple[str, int]] = {}
        sections = []
        for name, (host, options) in FRONTENDS.items():
            if ":" in host and not ipv6:
                continue
            srv = self.servers[name] = CaptureServer()
            port = free_port(host)
            self.ports[name] = (host, port)
            bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            unique = "    unique-id-format %ci:%cp\n" if "unique-id" in options else ""
            sections.append(f"listen {name}\n    bind {bind}\n{unique}"
                            f"    server s 127.0.0.1:{srv.port} {options}\n")
        for name, options in CHECKS.items():
            srv = self.servers[name] = CaptureServer()
            port = free_port("127.0.0.1")
            sections.append(f"listen {name}\n    bind 127.0.0.1:{port}\n"
                            f"    server s 127.0.0.1:{srv.port} {options} check inter 300ms\n")
        config = tmp / "haproxy.cfg"
        config.write_text(
            "global\n    maxconn 200\n\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n"
            "    timeout server 5s\n    timeout check 2s\n\n" + "\n".join(sections))
        self.log = open(tmp / "haproxy.log", "w+")
        self.proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.ipv6 = ipv6

    def connect(self, name: str) -> socket.socket:
        """A client connection through frontend name, once haproxy listens."""
        host, port = self.ports[name]
        end = time.monotonic() + DEADLINE
        while True:
            try:
                return socket.create_connection((host, port), timeout=2)
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.log.seek(0)
                    raise AssertionError(f"haproxy is not listening on {name} "
                                         f"(exit {self.proc.poll()}):\n{self.log.read()}"
                                         ) from exc
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for srv in self.servers.values():
            srv.close()
        self.log.close()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    b = Balancer(tmp_path_factory.mktemp("haproxy"))
    try:
        yield b
    finally:
        b.close()


def wait_for(what: str, probe: Callable[[], T], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = probe()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_balancer_header_gives_the_client_address(balancer: Balancer, name: str) -> None:
    if name not in balancer.ports:
        pytest.skip("no IPv6 loopback on this machine")
    client = balancer.connect(name)
    with client:
        payload = f"hello from {name} {client.getsockname()[1]}\n".encode()
        client.sendall(payload)
        data = wait_for(f"{name}'s bytes at the server", lambda: balancer.servers[name].find(
            payload))
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
def test_health_checks(balancer: Balancer, name: str) -> None:
    """send-proxy-v2 checks are LOCAL (the connection's own addresses stand);
    send-proxy checks carry the check connection's own addresses (spec
    §2.1: a getsockname()/getpeername() pair), so the destination is the
    capturing server."""
    srv = balancer.servers[name]
    data = wait_for(f"a health check on {name}", lambda: srv.headers())[0]
    rc, h = core.parse_proxy_header(data)
    assert rc > 0 and h is not None, (rc, data)
    if name == "check-v2":
        assert (h["version"], h["command"], h["family"]) == (2, "LOCAL", "UNKNOWN")
        assert h["src"] is None and h["dst"] is None
    else:
        assert (h["version"], h["command"], h["family"]) == (1, "PROXY", "TCP4")
        assert h["src"][0] == "127.0.0.1" and h["dst"] == ("127.0.0.1", srv.port)

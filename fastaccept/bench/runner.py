"""Benchmark fastaccept against reference servers: ``python -m fastaccept bench``.

Every scenario (``scenarios``) runs the load generator (``loadgen``, in this
process) against each of its reference servers (``refservers``, one
process each), interleaved: for each repetition, every server once in turn,
so slow drift of a noisy machine hits all servers alike. Each run gets a
fresh server process (no state carried between runs: pool threads, TIME_WAIT
sockets, allocator growth), warmed with a few connections before measuring.

What one run of a ``connections`` scenario measures:

    conn/s          completed connections / the load generator's measured window
                    (first connect -> last end: when the accept queue
                    overflowed, the clients left in SYN or SYN-ACK
                    retransmission back-off stretch it, so it shows the tail)
    CPU us/conn     the server process's CPU time (user + system) over the
                    run / completed connections, read from outside the
                    process: its CPU clock (exact, in ns) or, where that
                    cannot be read, utime + stime of /proc/PID/stat (in clock
                    ticks of 10 ms: hence the large connection counts)
    connect p99     connect start -> handshake done, 99th percentile
    rtt p99         connect start -> EOF after the reply, 99th percentile
    overflows       TcpExt ListenOverflows delta (/proc/net/netstat): SYNs or
                    handshake ACKs dropped because the accept queue was full
    failures        connections that did not complete (refused, reset, timeout, other)

The table shows the median of each over the repetitions, and each server's
CPU/conn as a ratio to c-inline's (the C loop answering without Python:
about the floor for this protocol, since on loopback most of the cost per
connection is the kernel's TCP work). On a 2-core machine the client and the
server share the cores, so conn/s is often bound by the client; CPU per
connection is the capacity figure.

A ``requests`` scenario (keep-alive) measures instead:

    req/s           complete responses / the measured window
    CPU us/req      the server's CPU time over the run / complete responses
    req p50 ... max a request's send start -> the end of its response (the max
                    shows clients left waiting for their first response
                    behind a thread held by another connection)
    failures        connections that did not get all their responses,
                    "closed" (the server ended a kept connection early) included

An ``idle`` scenario runs its real requests one at a time twice in one
server's life: first alone (K = 0), then beside K idle connections that
never send, opened from this process (64 at a time, each group established
and out of the server's accept queue before the next). It shows both round
trips (connect start -> EOF) at p50 and p99, their ratio, and the server's
RSS growth per idle connection: VmRSS of /proc/PID/status just before the
idle connections are opened and once they are all accepted and the server
is quiet. Its failures add the idle connections the server closed before
the end (``idle_lost``). This process and the server raise their
RLIMIT_NOFILE soft limit for the K sockets; when the hard limit is too low,
the row says so and is skipped.

The HTTP scenarios (``http-close``, ``http-keepalive``, ``http-burst``,
``http-idle``) run these kinds against the HTTP servers, which all serve
``wsgiapp.app``: fastaccept's WSGIServer (refservers' ``wsgi --hello``) and
the peers of ``httpservers``. The request is an HTTP/1.0 GET read to EOF or
HTTP/1.1 GETs framed by their Content-Length, each with a Host field.
Their table shows req/s (and its ratio to the peers the issue compares
fastaccept with), CPU us/req, request latency p50/p99/max, connect p99,
overflows and failures, then whether fastaccept meets each target. A peer
that is not installed is skipped, with a line under the table. The server's
CPU time and memory are its whole process tree's (gunicorn and granian run
workers in child processes). In ``http-idle`` the real requests stop
starting ``timeout`` seconds in (a peer whose threads the idle clients hold
answers none, and each would wait out its timeout): those never sent count
as failures (``not_started``).

ListenOverflows is a per-network-namespace counter. When this process may
create a namespace (root), ``main`` moves into a private one at start (with
its own loopback, brought up), so the counter counts our runs alone; otherwise
it falls back to the host's counter and says so. (A new namespace starts
with the kernel's default network sysctls, e.g. net.core.somaxconn 4096,
whatever the host has set.)
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import os
import platform
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from fastaccept import _kernel
from fastaccept.bench.scenarios import (BASELINE, DEFAULT_SCENARIOS, HTTP_JUDGED,
                                        IDLE_FD_HEADROOM, SCENARIOS, SERVERS, VARIANTS,
                                        Scenario, ServerSpec, runs_in)

__all__ = [
    "HOST", "REQUEST", "LINE_REQUEST",
    "Scenario", "ServerSpec", "SCENARIOS", "SERVERS", "RunResult", "BenchReport",
    "ServerProcess", "ServerStartError", "QueueSampler", "read_netstat", "cpu_source",
    "process_cpu_ns", "process_tree", "read_rss_bytes", "free_port", "listen_queue",
    "scenario_request", "enter_private_netns", "warm_client",
    "spread", "connections_held", "wait_stopped", "busiest", "kill_counting",
    "make_server", "server_missing", "request_load", "open_idle", "idle_lost", "close_idle",
    "idle_fd_shortfall",
    "scenario_servers", "run_one", "run_bench", "summarize", "format_table", "report_dict",
    "plot", "add_arguments", "main",
]

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
LINE_REQUEST = b"ping\n"       # the line protocols' request (echoed)
START_TIMEOUT_S = 30.0      # a server process has this long to print its port
STOP_TIMEOUT_S = 15.0       # ... and this long to exit after SIGTERM
IDLE_WAIT_S = 0.5           # at most this long for a server to go idle after a run
IDLE_CPU_FRACTION = 0.01    # "idle": under 1% of a core over a 20 ms window
QUEUE_SAMPLE_S = 0.001      # listen queue sampling period during burst runs
QUEUE_MAX_SAMPLES = 200000
DEFAULT_REPS = 3
WARM_CONNECTIONS = 64       # before measuring: pool threads exist, code paths are hot
QUICK_WARM_CONNECTIONS = 16
NETSTAT_PATH = "/proc/net/netstat"
IDLE_GROUP = 64             # idle connections opened at once (half the idle backlog)
IDLE_OPEN_TIMEOUT_S = 60.0  # for opening all of a run's idle connections
POLL_INTERVAL_S = 0.001     # how often a wait for the accept queue to empty looks
# ``python -m`` puts the working directory first on sys.path: children start
# where this very fastaccept package lives, so they import it and not a source
# tree that happens to be the working directory.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# linux/sched.h, linux/sockios.h, net/if.h, linux/time.h (CPUCLOCK_SCHED)
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = struct.Struct("16sH22x")        # struct ifreq: name, then ifr_flags in the union
CPUCLOCK_SCHED = 2




# -- machine counters ---------------------------------------------------------

def read_netstat(path: str = NETSTAT_PATH) -> Dict[str, int]:
    """Return the TcpExt counters of /proc/net/netstat (this network namespace).

    As _kernel.read_tcpext, but counters that cannot be read raise OSError:
    a bench must not report overflows it could not count as zero.
    """
    counters = _kernel.read_tcpext(path)
    if not counters:
        raise OSError(errno.ENODATA, f"no TcpExt counters in {path}")
    return counters


def _proc_stat_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # comm (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])     # fields 14 and 15
    return (utime + stime) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _clock_cpu_ns(pid: int) -> int:
    # clock_getcpuclockid(pid) as the kernel encodes it: a process-wide
    # CPUCLOCK_SCHED clock, i.e. the exact sum of its threads' run time.
    return time.clock_gettime_ns(((~pid) << 3) | CPUCLOCK_SCHED)


def cpu_source() -> str:
    """Return how server CPU time is read here: "cpu-clock" or "proc-stat"."""
    try:
        _clock_cpu_ns(os.getpid())
        return "cpu-clock"
    except OSError:
        return "proc-stat"


def process_cpu_ns(pid: int, source: str) -> int:
    """Return the CPU time (user + system) process ``pid`` has used, in ns."""
    return _clock_cpu_ns(pid) if source == "cpu-clock" else _proc_stat_cpu_ns(pid)


def process_tree(pid: int, proc: str = "/proc") -> List[int]:
    """Return ``pid`` and every descendant of it, parents first.

    Read from /proc/PID/task/TID/children: a process that exits meanwhile
    is left out (with its own children), not an error.
    """
    tree = [pid]
    i = 0
    while i < len(tree):
        here = tree[i]
        i += 1
        try:
            tasks = os.listdir(f"{proc}/{here}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"{proc}/{here}/task/{tid}/children") as f:
                    tree += [int(child) for child in f.read().split()]
            except OSError:
                continue
    return tree


def read_rss_bytes(pid: int, path: Optional[str] = None) -> int:
    """Return the resident set size (VmRSS of /proc/PID/status) of ``pid``, in bytes.

    ``path`` reads another file of that format instead. A file without a
    VmRSS line (a kernel thread, a zombie) raises OSError: a bench must not
    report memory it could not read as zero.
    """
    path = path or f"/proc/{pid}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                fields = line.split()
                if len(fields) != 3 or fields[2] != "kB":
                    raise OSError(errno.EINVAL, f"unexpected VmRSS line in {path}: {line!r}")
                return int(fields[1]) * 1024
    raise OSError(errno.ENODATA, f"no VmRSS in {path}")


def free_port(host: str = HOST) -> int:
    """A TCP port of ``host`` that nothing is bound to now, for a server that
    binds its own socket (another bind could take it meanwhile; in the
    bench's private network namespace nothing else binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listen_queue(sock: socket.socket) -> Tuple[int, int]:
    """Return (connections waiting in the accept queue, its limit) of a listening socket.

    As _kernel.listen_queue, but a socket that is closed, not TCP or not
    listening raises OSError (EINVAL), which ends a QueueSampler.
    """
    got = _kernel.listen_queue(sock)
    if got is None:
        raise OSError(errno.EINVAL, "not a listening TCP socket")
    return got


def enter_private_netns() -> Optional[str]:
    """Move this process into a new network namespace with loopback up.

    Call it while the process has a single thread (only the calling thread
    moves). Return None on success, else why not (the process is then still
    in its original namespace).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        unshare, setns = libc.unshare, libc.setns
    except (OSError, AttributeError) as e:
        return f"no unshare(): {e}"
    try:
        original = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open /proc/self/ns/net: {e.strerror}"
    try:
        if unshare(CLONE_NEWNET) != 0:
            return f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                got = fcntl.ioctl(s, SIOCGIFFLAGS, IFREQ.pack(b"lo", 0))
                flags = IFREQ.unpack(got)[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, IFREQ.pack(b"lo", flags | IFF_UP))
        except OSError as e:
            # A namespace without loopback is useless: go back where we were.
            if setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace "
                              f"failed after: cannot bring lo up: {e}") from e
            return f"cannot bring lo up in a new namespace: {e.strerror}"
        return None
    finally:
        os.close(original)


# -- one server process ---------------------------------------------------------

class ServerStartError(RuntimeError):
    """A reference server process did not come up."""


class ServerProcess:
    """One reference server in a child process, serving a socket this process made.

    The listening socket is created here (so its backlog is exactly the
    scenario's and its accept queue can be sampled from here with TCP_INFO)
    and inherited by the child. Use as a context manager.

    With ``processes`` > 1 the server is a supervisor of that many processes
    (``refservers --processes``): on the inherited socket (``listener``
    "shared"), or, for "reuseport", on sockets it binds itself (``sock`` is
    then None). Its supervisor events are read with ``next_event``.

    ``peer``: a peer of ``httpservers`` (``kind`` one of its NAMES) instead
    of a refservers server; one that cannot take a socket
    (``httpservers.BINDS_ITSELF``) is given a free port to bind instead
    (``sock`` is None).

    The CPU time and memory are the whole process tree's (a supervisor's
    children, gunicorn's and granian's workers); a server on sockets of its
    own has its accept queue read with sock_diag.
    """

    def __init__(self, kind: str, *, backlog: int, workers: int, sleep_ms: float = 0.0,
                 cpu_iters: int = 0, source: Optional[str] = None,
                 protocol: str = "http-close", fds: Optional[int] = None,
                 max_connections: Optional[int] = None, processes: int = 1,
                 listener: Optional[str] = None, extra: Sequence[str] = (),
                 peer: bool = False) -> None:
        self.kind = kind
        self.peer = peer
        self.extra = list(extra)
        self.processes = processes
        self.listener = listener
        self.events: List[Dict[str, Any]] = []
        self.per_process: List[int] = []
        self._taken: Set[int] = set()
        self._out = b""
        self.backlog = backlog
        self.workers = workers
        self.sleep_ms = sleep_ms
        self.cpu_iters = cpu_iters
        self.protocol = protocol
        self.fds = fds
        self.max_connections = max_connections
        self.source = source or cpu_source()
        self.sock: Optional[socket.socket] = None
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.served: Optional[int] = None
        self._stderr: Optional[Any] = None

    def start(self) -> "ServerProcess":
        """Start the process; return once it serves (bounded by START_TIMEOUT_S)."""
        sock = None if self._binds_itself() else socket.socket(socket.AF_INET,
                                                                socket.SOCK_STREAM)
        self.sock = sock
        try:
            if sock is not None:
                sock.bind((HOST, 0))
                sock.listen(self.backlog)
                self.port = sock.getsockname()[1]
            elif self.peer:
                self.port = free_port()
            self._stderr = tempfile.TemporaryFile()
            cmd = self._peer_command() if self.peer else self._command()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr,
                                         pass_fds=() if sock is None else (sock.fileno(),),
                                         cwd=PACKAGE_PARENT)
            line = self._read_line(time.monotonic() + START_TIMEOUT_S)
            if not line.startswith(b"port "):
                raise ServerStartError(f"{self.kind} did not start: {self._why()}")
            if sock is None:
                self.port = int(line.split()[1])
        except BaseException:
            self.stop()
            raise
        return self

    def _binds_itself(self) -> bool:
        """Whether the server binds its own listeners (the bench makes no socket)."""
        if self.peer:
            from fastaccept.bench import httpservers

            return self.kind in httpservers.BINDS_ITSELF
        return self.listener == "reuseport"

    def _command(self) -> List[str]:
        """The refservers command line."""
        where = ["--fd", str(self.sock.fileno())] if self.sock else ["--port", "0"]
        cmd = [sys.executable, "-m", "fastaccept.bench.refservers", self.kind,
               *where, "--backlog", str(self.backlog),
               "--workers", str(self.workers), "--sleep-ms", repr(self.sleep_ms),
               "--cpu-iters", str(self.cpu_iters), "--parent", str(os.getpid())]
        if self.processes > 1 or self.listener is not None:
            cmd += ["--processes", str(self.processes)]
            if self.listener is not None:
                cmd += ["--listener", self.listener]
        # Only when asked, so the command line of the first scenarios stays as it was.
        if self.protocol != "http-close":
            cmd += ["--protocol", self.protocol]
        if self.fds is not None:
            cmd += ["--fds", str(self.fds)]
        if self.max_connections is not None:
            cmd += ["--max-connections", str(self.max_connections)]
        return cmd + self.extra

    def _peer_command(self) -> List[str]:
        """The httpservers command line."""
        where = ["--fd", str(self.sock.fileno())] if self.sock else ["--port", str(self.port)]
        cmd = [sys.executable, "-m", "fastaccept.bench.httpservers", self.kind, *where,
               "--backlog", str(self.backlog), "--threads", str(self.workers),
               "--parent", str(os.getpid())]
        if self.fds is not None:
            cmd += ["--fds", str(self.fds)]
        return cmd + self.extra

    def _read_line(self, deadline: float) -> bytes:
        """The next line of the server's stdout, or b"" at the deadline or EOF.

        Read with os.read into a buffer of its own (a buffered readline
        after select() could swallow the lines behind this one)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return b""
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        return line + b"\n"

    def _take(self, line: bytes) -> None:
        """Keep what a supervisor's stdout line says."""
        if line.startswith(b"event "):
            self.events.append(json.loads(line[len(b"event "):]))
        elif line.startswith(b"served "):
            self.served = int(line.split()[1])
        elif line.startswith(b"per-process"):
            self.per_process = [int(n) for n in line.split()[1:]]

    def mark(self) -> int:
        """Where the events read so far end (next_event's ``since``)."""
        return len(self.events)

    def next_event(self, kind: str, timeout: float, since: int = 0,
                   **match: Any) -> Optional[Dict[str, Any]]:
        """The first supervisor event named ``kind`` (with the fields
        ``match`` gives, from index ``since`` on) that no call returned yet;
        None if none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            while i < len(self.events):
                e = self.events[i]
                if i not in self._taken and e.get("event") == kind and all(
                        e.get(k) == v for k, v in match.items()):
                    self._taken.add(i)
                    return e
                i += 1
            line = self._read_line(deadline)
            if not line:
                return None
            self._take(line)

    def children(self) -> List[int]:
        """The server process's children (a supervisor's serving processes)."""
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def _why(self) -> str:
        assert self.proc is not None
        code = self.proc.poll()
        err = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read()[-2000:]
        state = f"exited with status {code}" if code is not None else "no port line in time"
        text = err.decode(errors="replace").strip()
        return f"{state}{': ' + text if text else ''}"

    def cpu_ns(self) -> int:
        """CPU time the server's processes (its process tree) have used so far, in ns."""
        return self._tree_sum(lambda pid: process_cpu_ns(pid, self.source))

    def rss_bytes(self) -> int:
        """The resident set size of the server's processes now, in bytes."""
        assert self.proc is not None
        return self._tree_sum(read_rss_bytes)

    def _tree_sum(self, read: Callable[[int], int]) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        total = read(pid)       # the server itself: an error here is one
        for child in process_tree(pid)[1:]:
            try:
                total += read(child)
            except OSError:
                pass            # a descendant that exited meanwhile holds nothing
        return total

    def wait_idle(self, max_wait_s: float = IDLE_WAIT_S) -> int:
        """Wait (bounded) until the server uses under 1% of a core; return its CPU ns."""
        window_s = 0.02
        last = self.cpu_ns()
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() < deadline:
            time.sleep(window_s)
            now = self.cpu_ns()
            if now - last < window_s * 1e9 * IDLE_CPU_FRACTION:
                return now
            last = now
        return last

    def queue(self) -> Tuple[int, int]:
        """(depth, limit) of the server's accept queue right now.

        From TCP_INFO on the bench's socket, or, for a server that bound its
        own, from a sock_diag dump of its port, summed over its listeners
        (OSError if nothing listens)."""
        if self.sock is not None:
            return listen_queue(self.sock)
        from fastaccept import monitor

        snap = monitor.snapshot(self.port)
        if not snap["listeners"]:
            raise OSError(errno.ENOENT, f"nothing listens on port {self.port}")
        return int(snap["queue"]), int(snap["backlog"] or 0)

    def stop(self) -> None:
        """SIGTERM the server and wait for it (SIGKILL after STOP_TIMEOUT_S); idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            for line in (self._out + out).splitlines():
                self._take(line)
            self._out = b""
            self.returncode = proc.returncode
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class QueueSampler:
    """Sample a listening socket's accept queue depth in a thread, every QUEUE_SAMPLE_S.

    ``samples`` holds (seconds since start, depth) at every change of depth.
    """

    def __init__(self, server: ServerProcess) -> None:
        assert server.sock is not None, "sample a started server"
        self.sock = server.sock
        self.samples: List[Tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-sampler", daemon=True)
        self._t0 = 0.0

    def __enter__(self) -> "QueueSampler":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        # Only changes are kept (a step plot loses nothing), plus the last sample.
        last = -1
        t = 0.0
        for _ in range(QUEUE_MAX_SAMPLES):
            try:
                depth, _ = listen_queue(self.sock)
            except OSError:
                break
            t = round(time.monotonic() - self._t0, 4)
            if depth != last:
                self.samples.append((t, depth))
                last = depth
            if self._done.wait(QUEUE_SAMPLE_S):
                break
        if self.samples and self.samples[-1][0] != t:
            self.samples.append((t, last))


# -- one run ---------------------------------------------------------------------

@dataclass
class RunResult:
    """What one load-generator run against one fresh server measured."""

    scenario: str
    server: str
    rep: int
    connections: int = 0
    completed: int = 0
    failures: Dict[str, int] = field(default_factory=dict)
    conn_per_s: float = 0.0
    connect_p99_ms: float = 0.0
    rtt_p99_ms: float = 0.0
    cpu_us_per_conn: Optional[float] = None
    client_cpu_us_per_conn: Optional[float] = None
    listen_overflows: int = 0
    listen_drops: int = 0
    served: Optional[int] = None
    queue_max: Optional[int] = None
    queue_samples: List[Tuple[float, int]] = field(default_factory=list)
    load: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    # requests and idle scenarios
    rtt_p50_ms: float = 0.0
    requests: int = 0
    requests_per_s: float = 0.0
    cpu_us_per_request: Optional[float] = None
    request_p50_ms: float = 0.0
    request_p99_ms: float = 0.0
    request_max_ms: float = 0.0
    idle_connections: int = 0
    base_rtt_p50_ms: Optional[float] = None     # the same requests with no idle connection
    base_rtt_p99_ms: Optional[float] = None
    rtt_p50_ratio: Optional[float] = None       # with / without the idle connections
    rtt_p99_ratio: Optional[float] = None
    rss_before: Optional[int] = None            # the server's VmRSS, bytes
    rss_after: Optional[int] = None
    rss_per_idle_conn: Optional[float] = None
    base_load: Dict[str, Any] = field(default_factory=dict)
    skipped: Optional[str] = None               # why the run did not happen
    # several processes
    per_process: List[int] = field(default_factory=list)   # requests each one served
    spread: Optional[float] = None              # the least loaded one's share x processes
    # the reload kind
    reloads: int = 0
    reload_p50_ms: Optional[float] = None       # SIGHUP -> every new child ready, switched
    reload_max_ms: Optional[float] = None
    killed_held: Optional[int] = None           # connections the SIGKILLed child held
    responses_5xx: Optional[int] = None         # over the exit reports of the children

    @property
    def failed(self) -> int:
        """Connections that did not complete."""
        return sum(self.failures.values())


def make_server(scenario: Scenario, spec: ServerSpec, *, cpu_iters: int = 0,
                source: Optional[str] = None) -> ServerProcess:
    """The server process (not started) of ``spec`` configured for ``scenario``."""
    fds = scenario.server_fds()
    if spec.peer:
        return ServerProcess(spec.kind, backlog=scenario.backlog,
                             workers=spec.workers_for(scenario), source=source, fds=fds,
                             extra=spec.extra, peer=True)
    # an HTTP scenario's refservers server (wsgi) speaks its HTTP as http-close
    return ServerProcess(spec.kind, backlog=scenario.backlog, workers=spec.workers_for(scenario),
                         sleep_ms=scenario.sleep_ms, cpu_iters=cpu_iters, source=source,
                         protocol="http-close" if scenario.is_http else scenario.protocol,
                         fds=fds,
                         # fastaccept's default (10,000) would stop accepting at 10,000 idle
                         max_connections=fds if spec.kind == "fastaccept" else None,
                         processes=spec.processes, listener=spec.listener,
                         extra=spec.extra)


def scenario_request(scenario: Scenario, port: int) -> bytes:
    """The request the clients of ``scenario`` send to a server on ``port``.

    The HTTP scenarios' GETs carry a Host field (HTTP/1.1 requires one;
    every HTTP client sends one with HTTP/1.0 too); the first scenarios send
    REQUEST, the line protocols LINE_REQUEST.
    """
    from fastaccept.bench import loadgen

    if scenario.protocol == "http/1.1":
        return loadgen.default_request("http", HOST, port)
    if scenario.protocol == "http/1.0":
        return b"GET / HTTP/1.0\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port)
    return LINE_REQUEST if scenario.protocol.startswith("line-") else REQUEST


def spread(counts: Sequence[int]) -> Optional[float]:
    """How evenly ``counts`` are spread: the smallest one's share of the sum
    times their number (1.0: even; 0.0: one took nothing)."""
    total = sum(counts)
    return min(counts) * len(counts) / total if counts and total else None


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to local ``port`` process pid
    holds: its socket descriptors matched against one sock_diag dump (which
    leaves TIME_WAIT out, unlike /proc/net/tcp, which a busy run fills with
    tens of thousands of them)."""
    from fastaccept.monitor import TCP_ESTABLISHED, _diag_rows
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    held = 0
    for family in (socket.AF_INET, socket.AF_INET6):
        for _, state, _, _, _, inode in _diag_rows(family, port):
            held += state == TCP_ESTABLISHED and inode in inodes
    return held


def request_load(scenario: Scenario, quick: bool, timeout: float,
                 port: int = 0) -> Dict[str, Any]:
    """The ``loadgen.run`` keyword arguments of one measured load of a
    ``requests`` scenario (``port``: the server's, for an HTTP Host field)."""
    return {"connections": scenario.size(quick), "concurrency": scenario.concurrency,
            "timeout": timeout, "max_seconds": timeout,
            "requests_per_connection": scenario.per_connection(quick),
            "framing": scenario.framing, "request": scenario_request(scenario, port)}


def server_missing(spec: ServerSpec) -> Optional[str]:
    """Why ``spec``'s server cannot run here (a peer not installed), or None."""
    if not spec.peer:
        return None
    from fastaccept.bench import httpservers

    return httpservers.missing(spec.kind)


def scenario_servers(scenario: Scenario, servers: Sequence[str]) -> List[str]:
    """The servers of ``servers`` that ``scenario`` runs, in their order."""
    return [label for label in servers if runs_in(scenario, label)]


def run_one(scenario: Scenario, spec: ServerSpec, rep: int = 0, *, quick: bool = False,
            cpu_iters: int = 0, timeout_s: Optional[float] = None,
            source: Optional[str] = None) -> RunResult:
    """Start a fresh server, warm it, run one measured load against it, stop it."""
    why = server_missing(spec)
    if why is not None:
        return RunResult(scenario.name, spec.label, rep, skipped=why)
    if scenario.kind == "requests":
        return _run_requests(scenario, spec, rep, quick=quick, cpu_iters=cpu_iters,
                             timeout_s=timeout_s, source=source)
    if scenario.kind == "idle":
        return _run_idle(scenario, spec, rep, quick=quick, cpu_iters=cpu_iters,
                         timeout_s=timeout_s, source=source)
    if scenario.kind == "reload":
        return _run_reload(scenario, spec, rep, quick=quick, cpu_iters=cpu_iters,
                           timeout_s=timeout_s, source=source)
    return _run_connections(scenario, spec, rep, quick=quick, cpu_iters=cpu_iters,
                            timeout_s=timeout_s, source=source)


def _run_connections(scenario: Scenario, spec: ServerSpec, rep: int, *, quick: bool,
                     cpu_iters: int, timeout_s: Optional[float],
                     source: Optional[str]) -> RunResult:
    """One run of a ``connections`` scenario."""
    from fastaccept.bench import loadgen

    result = RunResult(scenario.name, spec.label, rep)
    n = scenario.quick_connections if quick else scenario.connections
    timeout = timeout_s if timeout_s is not None else scenario.timeout_s
    server = make_server(scenario, spec, cpu_iters=cpu_iters, source=source)
    try:
        with server:
            for _ in range(spec.processes if spec.processes > 1 else 0):
                if server.next_event("ready", START_TIMEOUT_S) is None:
                    raise ServerStartError(f"{spec.label}: its processes did not start")
            request = scenario_request(scenario, server.port)
            warm = QUICK_WARM_CONNECTIONS if quick else WARM_CONNECTIONS
            loadgen.run(HOST, server.port, connections=warm, concurrency=min(8, warm),
                        timeout=timeout, max_seconds=timeout, request=request)
            cpu0 = server.wait_idle()
            net0 = read_netstat()
            client0 = time.process_time_ns()
            if scenario.burst and server.sock is not None:
                with QueueSampler(server) as sampler:
                    load = loadgen.run(HOST, server.port, connections=n, burst=True,
                                       timeout=timeout, max_seconds=timeout, request=request)
                result.queue_samples = sampler.samples
                result.queue_max = max((d for _, d in sampler.samples), default=0)
            elif scenario.burst:
                # A server on listeners of its own: no TCP_INFO to sample (a
                # sock_diag dump every millisecond would load the client).
                load = loadgen.run(HOST, server.port, connections=n, burst=True,
                                   timeout=timeout, max_seconds=timeout, request=request)
            else:
                load = loadgen.run(HOST, server.port, connections=n,
                                   concurrency=scenario.concurrency, timeout=timeout,
                                   max_seconds=timeout, request=request)
            client1 = time.process_time_ns()
            cpu1 = server.wait_idle()
            net1 = read_netstat()
    except (OSError, ServerStartError, ValueError) as e:
        result.error = str(e)
        return result
    result.served = server.served
    if spec.processes > 1:
        # the warm-up's connections are in the counts too: a few dozen of thousands
        result.per_process = list(server.per_process)
        result.spread = spread(server.per_process)
    _take_load(result, load)
    result.listen_overflows = net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0)
    result.listen_drops = net1.get("ListenDrops", 0) - net0.get("ListenDrops", 0)
    if load.completed:
        result.cpu_us_per_conn = (cpu1 - cpu0) / 1000.0 / load.completed
        result.client_cpu_us_per_conn = (client1 - client0) / 1000.0 / load.completed
    if load.requests:
        result.cpu_us_per_request = (cpu1 - cpu0) / 1000.0 / load.requests
    return result


def _take_load(result: RunResult, load: Any) -> None:
    """Copy what every kind reports of a load generator run into result."""
    result.connections = load.connections
    result.completed = load.completed
    result.failures = dict(load.failures)
    result.conn_per_s = load.conn_per_s
    result.connect_p99_ms = load.connect_ms.p99
    result.rtt_p50_ms = load.rtt_ms.p50
    result.rtt_p99_ms = load.rtt_ms.p99
    result.requests = load.requests
    result.requests_per_s = load.requests_per_s
    result.request_p50_ms = load.request_ms.p50
    result.request_p99_ms = load.request_ms.p99
    result.request_max_ms = load.request_ms.max
    result.load = load.as_dict()


def _run_requests(scenario: Scenario, spec: ServerSpec, rep: int, *, quick: bool,
                  cpu_iters: int, timeout_s: Optional[float],
                  source: Optional[str]) -> RunResult:
    """One run of a ``requests`` scenario: keep-alive, or a connection per request."""
    from fastaccept.bench import loadgen

    result = RunResult(scenario.name, spec.label, rep)
    timeout = timeout_s if timeout_s is not None else scenario.timeout_s
    per_conn = scenario.per_connection(quick)
    n_warm = QUICK_WARM_CONNECTIONS if quick else WARM_CONNECTIONS
    server = make_server(scenario, spec, cpu_iters=cpu_iters, source=source)
    try:
        with server:
            measured = request_load(scenario, quick, timeout, server.port)
            warm = dict(measured)
            warm.update(connections=8 if per_conn > 1 else n_warm, concurrency=8,
                        requests_per_connection=min(per_conn, 16))
            loadgen.run(HOST, server.port, **warm)
            cpu0 = server.wait_idle()
            net0 = read_netstat()
            client0 = time.process_time_ns()
            load = loadgen.run(HOST, server.port, **measured)
            client1 = time.process_time_ns()
            cpu1 = server.wait_idle()
            net1 = read_netstat()
    except (OSError, ServerStartError, ValueError) as e:
        result.error = str(e)
        return result
    result.served = server.served
    _take_load(result, load)
    result.listen_overflows = net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0)
    result.listen_drops = net1.get("ListenDrops", 0) - net0.get("ListenDrops", 0)
    if load.completed:
        result.cpu_us_per_conn = (cpu1 - cpu0) / 1000.0 / load.completed
        result.client_cpu_us_per_conn = (client1 - client0) / 1000.0 / load.completed
    if load.requests:
        result.cpu_us_per_request = (cpu1 - cpu0) / 1000.0 / load.requests
    return result


# -- idle connections --------------------------------------------------------------

def idle_fd_shortfall(k: int) -> Optional[str]:
    """Make room for k idle sockets in this process (and the servers it
    starts, which inherit its hard limit): raise RLIMIT_NOFILE's soft limit.
    Return None, or why it cannot be done."""
    from fastaccept.bench.refservers import raise_fd_limit

    needed = k + IDLE_FD_HEADROOM + len(os.listdir("/proc/self/fd"))
    try:
        raise_fd_limit(needed)
    except ValueError as e:
        return (f"{k} idle connections need about {needed} descriptors in the bench and "
                f"in the server: {e} (raise it: ulimit -Hn)")
    return None


def _wait_established(group: List[socket.socket], deadline: float) -> None:
    """Wait until every socket of group finished its handshake (bounded)."""
    poller = select.poll()
    waiting = {s.fileno(): s for s in group}
    for fd in waiting:
        poller.register(fd, select.POLLOUT)
    while waiting:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise TimeoutError(errno.ETIMEDOUT, f"{len(waiting)} idle connections still not "
                               "established")
        for fd, _ in poller.poll(left_ms):
            err = waiting[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"idle connection: {os.strerror(err)}")
            poller.unregister(fd)
            del waiting[fd]


def _wait_accepted(server: ServerProcess, deadline: float) -> None:
    """Wait until the server's accept queue is empty (bounded)."""
    while server.queue()[0] > 0:
        if time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT, "the server did not accept the idle "
                               f"connections (accept queue {server.queue()[0]})")
        time.sleep(POLL_INTERVAL_S)     # a poll interval: the condition is re-checked


def open_idle(server: ServerProcess, k: int,
              timeout_s: float = IDLE_OPEN_TIMEOUT_S) -> List[socket.socket]:
    """Open k connections to server that never send; return them once all are in.

    They are opened IDLE_GROUP at a time: each group established and out of
    the server's accept queue (accepted) before the next, so a small backlog
    drops no SYN. OSError (TimeoutError past ``timeout_s``) if they cannot
    be; then none is left open.
    """
    socks: List[socket.socket] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(socks) < k:
            group = []
            for _ in range(min(IDLE_GROUP, k - len(socks))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                err = s.connect_ex((HOST, server.port))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, f"idle connection: {os.strerror(err)}")
                group.append(s)
            _wait_established(group, deadline)
            _wait_accepted(server, deadline)
    except BaseException:
        close_idle(socks)
        raise
    return socks


def idle_lost(socks: Sequence[socket.socket]) -> int:
    """How many of the idle connections the server has closed (or written to)."""
    poller = select.poll()
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
    return len(poller.poll(0))


def close_idle(socks: Sequence[socket.socket]) -> None:
    """Close the idle connections with a reset: no TIME_WAIT is left behind."""
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass        # already reset by the peer: the close is all there is
        s.close()


def _run_idle(scenario: Scenario, spec: ServerSpec, rep: int, *, quick: bool,
              cpu_iters: int, timeout_s: Optional[float],
              source: Optional[str]) -> RunResult:
    """One run of an ``idle`` scenario (see the module's docstring)."""
    from fastaccept.bench import loadgen

    result = RunResult(scenario.name, spec.label, rep)
    k = result.idle_connections = scenario.idle_connections
    why = idle_fd_shortfall(k)
    if why is not None:
        result.skipped = why
        return result
    timeout = timeout_s if timeout_s is not None else scenario.timeout_s
    n = scenario.size(quick)
    server = make_server(scenario, spec, cpu_iters=cpu_iters, source=source)
    try:
        with server:
            request = scenario_request(scenario, server.port)
            requests: Dict[str, Any] = {"connections": n, "concurrency": 1, "timeout": timeout,
                                        "request": request}
            if scenario.is_http:
                # A peer whose threads the idle clients hold answers no real
                # request: each would wait out its timeout, one at a time.
                requests["max_seconds"] = timeout
            warm = QUICK_WARM_CONNECTIONS if quick else WARM_CONNECTIONS
            loadgen.run(HOST, server.port, connections=warm, concurrency=min(8, warm),
                        timeout=timeout, max_seconds=timeout, request=request)
            server.wait_idle()
            base = loadgen.run(HOST, server.port, **requests)
            server.wait_idle()
            rss0 = server.rss_bytes()
            idle: List[socket.socket] = []
            try:
                idle = open_idle(server, k)
                server.wait_idle()
                rss1 = server.rss_bytes()
                net0 = read_netstat()
                load = loadgen.run(HOST, server.port, **requests)
                net1 = read_netstat()
                lost = idle_lost(idle)
            finally:
                close_idle(idle)
    except (OSError, ServerStartError, ValueError) as e:
        result.error = str(e)
        return result
    result.served = server.served
    _take_load(result, load)
    result.base_load = base.as_dict()
    result.failures = {kind: load.failures[kind] + base.failures[kind] for kind in load.failures}
    result.failures["idle_lost"] = lost
    if scenario.is_http:
        # the requests max_seconds left unsent fail too
        result.failures["not_started"] = 2 * n - base.connections - load.connections
    if base.completed:
        result.base_rtt_p50_ms = base.rtt_ms.p50
        result.base_rtt_p99_ms = base.rtt_ms.p99
    if base.rtt_ms.p50 > 0 and load.completed:
        result.rtt_p50_ratio = load.rtt_ms.p50 / base.rtt_ms.p50
    if base.rtt_ms.p99 > 0 and load.completed:
        result.rtt_p99_ratio = load.rtt_ms.p99 / base.rtt_ms.p99
    result.rss_before, result.rss_after = rss0, rss1
    result.rss_per_idle_conn = (rss1 - rss0) / k if k else None
    result.listen_overflows = net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0)
    result.listen_drops = net1.get("ListenDrops", 0) - net0.get("ListenDrops", 0)
    return result


# -- reloads under load ---------------------------------------------------------------

#: How long the bench waits for one supervisor event (a reload's switch...).
EVENT_TIMEOUT_S = 30.0
#: How long a reload run's load waits for requests already started.
RELOAD_REQUEST_TIMEOUT_S = 10.0


def _wait_flowing(port: int, deadline: float) -> None:
    """Wait until connections to port are established (the load is on)."""
    from fastaccept.monitor import snapshot
    while snapshot(port)["established"] == 0:
        if time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT, "the load did not start")
        time.sleep(POLL_INTERVAL_S)     # a poll interval: the condition is re-checked


def wait_stopped(pid: int, timeout: float = 5.0) -> bool:
    """Wait until every thread of process pid is stopped (state T: kill()
    returns before a SIGSTOP takes effect, and a thread still running may
    accept a batch of connections meanwhile); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            states = []
            for tid in tids:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return False        # gone
        if all(state in ("T", "t") for state in states):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)     # a poll interval: the states are read again


def busiest(pids: Sequence[int], port: int, timeout: float = 2.0) -> int:
    """The one of ``pids`` holding the most connections to ``port``, looked
    for until one holds some (or ``timeout``): a killed process that held
    nothing would test nothing. Each is counted stopped (SIGSTOP, then
    SIGCONT): connections a few milliseconds long come and go faster than
    a running process's descriptors can be matched to a socket dump. The
    one returned is left stopped, for ``kill_counting``."""
    deadline = time.monotonic() + timeout
    while True:
        best, most = -1, -1
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            held = connections_held(pid, port) if wait_stopped(pid) else -1
            if held > most:
                if best >= 0:
                    os.kill(best, signal.SIGCONT)
                best, most = pid, held
            else:
                os.kill(pid, signal.SIGCONT)
        if most > 0 or time.monotonic() >= deadline:
            return best
        os.kill(best, signal.SIGCONT)
        time.sleep(POLL_INTERVAL_S)     # a poll interval: the connections are counted again


def kill_counting(pid: int, port: int) -> int:
    """SIGKILL a serving process; return the connections to ``port`` it held
    then (counted once it is stopped with SIGSTOP, so none comes or goes)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        if not wait_stopped(pid):
            raise OSError(errno.ETIMEDOUT, f"process {pid} did not stop on SIGSTOP")
        return connections_held(pid, port)
    finally:
        os.kill(pid, signal.SIGKILL)


def _run_reload(scenario: Scenario, spec: ServerSpec, rep: int, *, quick: bool,
                cpu_iters: int, timeout_s: Optional[float],
                source: Optional[str]) -> RunResult:
    """One run of a ``reload`` scenario (see scenarios): a load of
    ``concurrency`` clients for the scenario's window while the supervisor
    gets ``reloads`` SIGHUPs, each sent once the one before has switched,
    and one serving child is SIGKILLed after the ``kill_after``-th."""
    from fastaccept.bench import loadgen

    result = RunResult(scenario.name, spec.label, rep)
    window = timeout_s if timeout_s is not None else scenario.timeout_s
    per_conn = scenario.per_connection(quick)
    framing = scenario.framing
    server = make_server(scenario, spec, cpu_iters=cpu_iters, source=source)
    loads: List[Any] = []
    failed: List[BaseException] = []
    times: List[float] = []
    outlasted = False

    def load() -> None:
        try:
            loads.append(loadgen.run(
                HOST, server.port, connections=10**7, concurrency=scenario.concurrency,
                timeout=RELOAD_REQUEST_TIMEOUT_S, max_seconds=window,
                requests_per_connection=per_conn, framing=framing,
                request=None if framing == "http" else REQUEST))
        except BaseException as e:      # reported as the run's error
            failed.append(e)

    thread = threading.Thread(target=load, name="reload-load", daemon=True)
    try:
        with server:
            for _ in range(spec.processes):
                if server.next_event("ready", START_TIMEOUT_S) is None:
                    raise ServerStartError(f"{spec.label}: its processes did not start")
            loadgen.run(HOST, server.port, connections=WARM_CONNECTIONS, concurrency=8,
                        timeout=RELOAD_REQUEST_TIMEOUT_S, request=REQUEST)
            net0 = read_netstat()
            thread.start()
            _wait_flowing(server.port, time.monotonic() + EVENT_TIMEOUT_S)
            for i in range(scenario.reloads):
                mark = server.mark()
                t0 = time.monotonic()
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGHUP)
                switched = server.next_event("switched", EVENT_TIMEOUT_S, since=mark)
                if switched is None:
                    raise OSError(errno.ETIMEDOUT, f"reload {i + 1} did not switch")
                times.append(time.monotonic() - t0)
                if i + 1 == scenario.kill_after:
                    victim = busiest(switched["pids"], server.port)
                    result.killed_held = kill_counting(victim, server.port)
                    gone = server.next_event("exited", EVENT_TIMEOUT_S, pid=victim)
                    new = gone and server.next_event("spawned", EVENT_TIMEOUT_S, since=mark,
                                                     slot=gone["slot"])
                    if not new or not server.next_event("ready", EVENT_TIMEOUT_S,
                                                        pid=new["pid"]):
                        raise OSError(errno.ETIMEDOUT, "the killed child was not replaced")
            outlasted = not thread.is_alive()
            thread.join(window + per_conn * RELOAD_REQUEST_TIMEOUT_S + 10.0)
            net1 = read_netstat()
    except (OSError, ServerStartError, ValueError) as e:
        result.error = str(e)
        if thread.ident is not None:
            thread.join(window + per_conn * RELOAD_REQUEST_TIMEOUT_S + 10.0)
        return result
    if failed or not loads:
        result.error = f"the load failed: {failed[0] if failed else 'it did not end'}"
        return result
    if outlasted:
        result.error = (f"the load ended before the {scenario.reloads} reloads: lengthen the "
                        "window (--timeout)")
    result.served = server.served
    _take_load(result, loads[0])
    result.reloads = len(times)
    if times:
        result.reload_p50_ms = statistics.median(times) * 1000.0
        result.reload_max_ms = max(times) * 1000.0
    result.responses_5xx = sum(
        int(((e.get("stats") or {}).get("responses") or {}).get("5xx", 0))
        for e in server.events if e.get("event") == "exited")
    result.listen_overflows = net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0)
    result.listen_drops = net1.get("ListenDrops", 0) - net0.get("ListenDrops", 0)
    return result


# -- the whole bench --------------------------------------------------------------

@dataclass
class BenchReport:
    """Every run of a bench, with what the reader needs to interpret it."""

    scenarios: List[str]
    servers: List[str]
    reps: int
    quick: bool
    netns: str                  # "private" or "host"
    netns_reason: str
    cpu_source: str
    cpu_iters_per_ms: int
    runs: List[RunResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    client_warmup: int = 0      # connections of the untimed burst before the first run
    only: bool = False          # the servers were chosen (--only): say which a scenario skips


Progress = Callable[[str], None]


def warm_client(connections: int, timeout_s: float = 10.0) -> int:
    """Send one untimed burst of ``connections`` from this process; return how many completed.

    A bench process's first burst overflowed the server's accept queue more
    often than its later ones, whatever the server (docs/design.md section
    9): with this burst first, against a C server in a thread of this
    process, the first measured burst behaves like the later ones. No
    server under test sees it.
    """
    from fastaccept.bench import loadgen
    from fastaccept.bench.refservers import RESPONSE

    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    thread: Optional[threading.Thread] = None
    try:
        lsock.bind((HOST, 0))
        lsock.listen(connections)
        thread = threading.Thread(target=loadgen.serve_inline, name="bench-warm-server",
                                  args=(lsock.fileno(), RESPONSE, stop_r), daemon=True)
        thread.start()
        return loadgen.run(HOST, lsock.getsockname()[1], connections=connections, burst=True,
                           timeout=timeout_s, max_seconds=timeout_s,
                           request=REQUEST).completed
    finally:
        os.write(stop_w, b"x")
        if thread is not None:
            thread.join(timeout_s)
        lsock.close()
        os.close(stop_r)
        os.close(stop_w)


def run_bench(scenarios: Sequence[str], servers: Sequence[str], *, reps: int = DEFAULT_REPS,
              quick: bool = False, timeout_s: Optional[float] = None, netns: str = "host",
              netns_reason: str = "", progress: Optional[Progress] = None,
              only: bool = False) -> BenchReport:
    """Run every scenario against each of its servers among ``servers``,
    interleaved, ``reps`` times."""
    from fastaccept.bench.refservers import calibrate_cpu_iters

    source = cpu_source()
    # One calibration for every server, so they all do the same work.
    iters_per_ms = calibrate_cpu_iters(1.0)
    report = BenchReport(list(scenarios), list(servers), reps, quick, netns, netns_reason,
                         source, iters_per_ms, only=only)
    bursts = [SCENARIOS[name] for name in scenarios if SCENARIOS[name].burst]
    if bursts:
        warm = max(sc.quick_connections if quick else sc.connections for sc in bursts)
        warm_client(warm)
        report.client_warmup = warm
    total = reps * sum(len(scenario_servers(SCENARIOS[name], servers)) for name in scenarios)
    t0 = time.monotonic()
    i = 0
    for name in scenarios:
        scenario = SCENARIOS[name]
        cpu_iters = round(iters_per_ms * scenario.cpu_ms)
        for rep in range(reps):
            for label in scenario_servers(scenario, servers):
                i += 1
                if progress:
                    progress(f"[{i}/{total} {_clock(time.monotonic() - t0)}] {name} "
                             f"rep {rep + 1}/{reps} {label} ...")
                spec = SERVERS.get(label) or VARIANTS[label]
                r = run_one(scenario, spec, rep, quick=quick, cpu_iters=cpu_iters,
                            timeout_s=timeout_s, source=source)
                report.runs.append(r)
                if progress:
                    progress(f"[{i}/{total} {_clock(time.monotonic() - t0)}] {name} "
                             f"rep {rep + 1}/{reps} {label}: {_brief(r)}")
    report.elapsed_s = time.monotonic() - t0
    return report


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _brief(r: RunResult) -> str:
    if r.error:
        return f"error: {r.error}"
    if r.skipped:
        return f"skipped: {r.skipped}"
    kind = SCENARIOS[r.scenario].kind if r.scenario in SCENARIOS else "connections"
    if kind == "requests":
        cpu = "-" if r.cpu_us_per_request is None else f"{r.cpu_us_per_request:.0f} us/req"
        return (f"{r.requests} requests, {r.completed}/{r.connections} connections ok, "
                f"{r.requests_per_s:.0f} req/s, {cpu}, {r.failed} failures")
    if kind == "reload":
        return (f"{r.requests} requests, {r.reloads} reloads (p50 {r.reload_p50_ms or 0:.0f} ms), "
                f"failures {r.failures}, 5xx {r.responses_5xx}, killed child held "
                f"{r.killed_held}")
    if kind == "idle":
        rss = "-" if r.rss_per_idle_conn is None else f"{r.rss_per_idle_conn:.0f} B/idle conn"
        beside = _fmt(r.rtt_p50_ms if r.completed else None, ".2f")
        return (f"{r.completed}/{r.connections} ok, rtt p50 {_fmt(r.base_rtt_p50_ms, '.2f')} -> "
                f"{beside} ms with {r.idle_connections} idle, {rss}, {r.failed} failures")
    cpu = "-" if r.cpu_us_per_conn is None else f"{r.cpu_us_per_conn:.0f} us/conn"
    spread_ = f", per process {'/'.join(map(str, r.per_process))}" if r.per_process else ""
    return (f"{r.completed}/{r.connections} ok, {r.conn_per_s:.0f} conn/s, {cpu}, "
            f"{r.listen_overflows} overflows{spread_}")


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(report: BenchReport) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Return {scenario: {server: medians over the repetitions}}, ratio included."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for name in report.scenarios:
        rows: Dict[str, Dict[str, Any]] = {}
        for label in scenario_servers(SCENARIOS[name], report.servers):
            runs = [r for r in report.runs if r.scenario == name and r.server == label]
            ok = [r for r in runs if r.error is None and r.skipped is None]
            rows[label] = {
                "runs": len(runs),
                "errors": [r.error for r in runs if r.error],
                "skipped": next((r.skipped for r in runs if r.skipped), None),
                "conn_per_s": _median([r.conn_per_s for r in ok]),
                "cpu_us_per_conn": _median([r.cpu_us_per_conn for r in ok]),
                "client_cpu_us_per_conn": _median([r.client_cpu_us_per_conn for r in ok]),
                "connect_p99_ms": _median([r.connect_p99_ms for r in ok]),
                "rtt_p99_ms": _median([r.rtt_p99_ms for r in ok]),
                "listen_overflows": _median([r.listen_overflows for r in ok]),
                "listen_drops": _median([r.listen_drops for r in ok]),
                "failures": _median([r.failed for r in ok]),
                "failures_max": max((r.failed for r in ok), default=None),
                "completed": _median([r.completed for r in ok]),
                "connections": _median([r.connections for r in ok]),
                "queue_max": _median([r.queue_max for r in ok]),
                "listen_overflows_per_rep": [r.listen_overflows for r in ok],
                "requests": _median([r.requests for r in ok]),
                "requests_per_s": _median([r.requests_per_s for r in ok]),
                "cpu_us_per_request": _median([r.cpu_us_per_request for r in ok]),
                "request_p50_ms": _median([r.request_p50_ms for r in ok]),
                "request_p99_ms": _median([r.request_p99_ms for r in ok]),
                "request_max_ms": _median([r.request_max_ms for r in ok]),
                "rtt_p50_ms": _median([r.rtt_p50_ms for r in ok]),
                "base_rtt_p50_ms": _median([r.base_rtt_p50_ms for r in ok]),
                "base_rtt_p99_ms": _median([r.base_rtt_p99_ms for r in ok]),
                "rtt_p50_ratio": _median([r.rtt_p50_ratio for r in ok]),
                "rtt_p99_ratio": _median([r.rtt_p99_ratio for r in ok]),
                "rss_per_idle_conn": _median([r.rss_per_idle_conn for r in ok]),
                "idle_lost": _median([r.failures.get("idle_lost") for r in ok]),
                "spread": _median([r.spread for r in ok]),
                "per_process_per_rep": [r.per_process for r in ok],
                "conn_per_s_by_rep": {r.rep: r.conn_per_s for r in ok},
                "reload_p50_ms": _median([r.reload_p50_ms for r in ok]),
                "reload_max_ms": max((r.reload_max_ms for r in ok
                                      if r.reload_max_ms is not None), default=None),
                "reloads_per_rep": [r.reloads for r in ok],
                "killed_held_per_rep": [r.killed_held for r in ok],
                "failures_per_rep": [r.failures for r in ok],
                "responses_5xx_per_rep": [r.responses_5xx for r in ok],
            }
        base = rows.get(BASELINE, {}).get("cpu_us_per_conn")
        for row in rows.values():
            cpu = row["cpu_us_per_conn"]
            row["cpu_ratio"] = cpu / base if cpu is not None and base else None
        peers = SCENARIOS[name].ratio_peers()
        if peers:
            for row in rows.values():
                row["req_ratio"] = {peer: _ratio(row["requests_per_s"],
                                                 rows.get(peer, {}).get("requests_per_s"))
                                    for peer in peers}
        out[name] = rows
    return out


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return value / base if value is not None and base else None


def _latency(row: Dict[str, Any], key: str) -> Optional[float]:
    """A latency of ``row``; None (not 0 ms) when no request completed."""
    return None if row["completed"] == 0 else row[key]


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: BenchReport, summary: Optional[Dict[str, Any]] = None) -> str:
    """Return the medians table as text, one block per scenario."""
    summary = summary if summary is not None else summarize(report)
    reps = "1 repetition" if report.reps == 1 else f"{report.reps} repetitions, interleaved"
    counter = ("private network namespace: the counters are this bench's alone"
               if report.netns == "private" else
               f"host-wide (no private namespace: {report.netns_reason}): "
               "other traffic on this machine is counted too")
    cpu = ("the server process's CPU clock (exact)" if report.cpu_source == "cpu-clock" else
           f"/proc/PID/stat utime+stime ({1000 // os.sysconf('SC_CLK_TCK')} ms ticks)")
    lines = [
        f"fastaccept bench{' --quick' if report.quick else ''}: {reps}; medians per server",
        f"ListenOverflows: {counter}",
        f"CPU/conn: {cpu} over the run / completed connections",
        f"machine: {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; client and servers share the CPUs",
    ]
    if report.client_warmup:
        lines.append(f"client: warmed by one untimed burst of {report.client_warmup} "
                     "connections to a server of its own before the first run")
    for name in report.scenarios:
        scenario = SCENARIOS[name]
        lines += ["", f"{name}: {scenario.describe(report.quick)}"]
        rows = summary[name]
        if scenario.is_http:
            lines += _http_lines(scenario, rows)
        elif scenario.kind == "requests":
            lines += _requests_rows(rows)
        elif scenario.kind == "reload":
            lines += _reload_rows(rows)
        elif scenario.per_process:
            lines += _process_rows(rows)
        elif scenario.kind == "idle":
            lines += _idle_rows(rows)
        else:
            lines += _connections_rows(rows)
        if scenario.note and "serial" in rows:
            serial = rows["serial"]["conn_per_s"]
            lines.append(f"  ({scenario.note}; measured {_fmt(serial, '.0f')} conn/s)")
        if BASELINE in rows and (scenario.sleep_ms or scenario.cpu_ms):
            lines.append(f"  ({BASELINE} answers in C and does not do the handler's work)")
        if scenario.per_rep_overflows and report.reps > 1:
            per_rep = "; ".join(
                f"{label} {' '.join(str(o) for o in row['listen_overflows_per_rep']) or '-'}"
                for label, row in rows.items())
            lines.append(f"  (overflows per repetition: {per_rep})")
        for label, why in scenario.skipped:
            if label in report.servers:
                lines.append(f"  ({label} {why})")
        if scenario.is_http:
            lines += _target_lines(scenario, rows)
        absent = [label for label in report.servers if not runs_in(scenario, label) and
                  label not in dict(scenario.skipped)]
        if report.only and absent:
            lines.append(f"  (not in this scenario: {', '.join(absent)})")
    lines += ["", f"took {_clock(report.elapsed_s)} (m:ss)"]
    return "\n".join(lines)


def _failures_cell(row: Dict[str, Any]) -> str:
    fails = _fmt(row["failures"], ".0f")
    if row["failures_max"] and row["failures_max"] != row["failures"]:
        fails += f" (max {row['failures_max']})"
    return fails


def _label_width(rows: Dict[str, Dict[str, Any]]) -> int:
    """The width of the server column: the longest label and two spaces."""
    return max([14] + [len(label) + 2 for label in rows])


def _unmeasured(label: str, row: Dict[str, Any], w: int) -> Optional[str]:
    """The line of a server with nothing measured (skipped, or every run failed)."""
    if row["skipped"] and row["conn_per_s"] is None:
        return f"{label:<{w}}skipped: {row['skipped']}"
    if row["errors"] and row["conn_per_s"] is None:
        return f"{label:<{w}}error: {row['errors'][0]}"
    return None


def _connections_rows(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    w = _label_width(rows)
    lines = [f"{'server':<{w}}{'conn/s':>8}{'CPU us/conn':>13}{'x c-inline':>12}"
             f"{'connect p99 ms':>16}{'rtt p99 ms':>12}{'overflows':>11}  {'failures'}"]
    for label, row in rows.items():
        gone = _unmeasured(label, row, w)
        if gone:
            lines.append(gone)
            continue
        lines.append(
            f"{label:<{w}}{_fmt(row['conn_per_s'], '.0f'):>8}"
            f"{_fmt(row['cpu_us_per_conn'], '.1f'):>13}"
            f"{_fmt(row['cpu_ratio'], '.2f'):>12}"
            f"{_fmt(row['connect_p99_ms'], '.2f'):>16}"
            f"{_fmt(row['rtt_p99_ms'], '.1f'):>12}"
            f"{_fmt(row['listen_overflows'], '.0f'):>11}  {_failures_cell(row)}")
    return lines


def _process_rows(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """A connections table for several processes: how the connections spread
    over them (the least loaded one's share x processes: 1.00 is even), the
    client's CPU per connection, and conn/s against one process: each row's
    against its ``single`` (the same server in one process), by the medians
    and repetition by repetition."""
    w = max(18, _label_width(rows))
    lines = [f"{'server':<{w}}{'conn/s':>8}{'x 1 proc':>9}{'CPU us/conn':>13}"
             f"{'client us/conn':>16}{'spread':>8}{'overflows':>11}  {'failures'}"]
    for label, row in rows.items():
        gone = _unmeasured(label, row, w)
        if gone:
            lines.append(gone)
            continue
        one = rows.get(_single(label), {}).get("conn_per_s")
        ratio = row["conn_per_s"] / one if one and row["conn_per_s"] else None
        lines.append(
            f"{label:<{w}}{_fmt(row['conn_per_s'], '.0f'):>8}{_fmt(ratio, '.2f'):>9}"
            f"{_fmt(row['cpu_us_per_conn'], '.1f'):>13}"
            f"{_fmt(row['client_cpu_us_per_conn'], '.1f'):>16}"
            f"{_fmt(row['spread'], '.2f'):>8}"
            f"{_fmt(row['listen_overflows'], '.0f'):>11}  {_failures_cell(row)}")
    per_process = "; ".join(
        f"{label} " + " ".join("/".join(map(str, counts)) for counts in row["per_process_per_rep"])
        for label, row in rows.items() if any(row["per_process_per_rep"]))
    if per_process:
        lines.append(f"  (connections per process, each repetition: {per_process})")
    paired = _paired_ratios(rows)
    if paired:
        lines.append(f"  (x 1 proc in each repetition, against the 1-process row in the same "
                     f"one: {paired})")
    return lines


def _single(label: str) -> str:
    """The 1-process row a row's "x 1 proc" divides by (itself, if it is one)."""
    spec = SERVERS.get(label) or VARIANTS.get(label)
    return spec.single if spec is not None and spec.single else label


def _paired_ratios(rows: Dict[str, Dict[str, Any]]) -> str:
    """Every row of several processes: its conn/s over its 1-process row's,
    repetition by repetition, and their median. The runs of one repetition
    are next to each other in time, so the ratio of a pair leaves out the
    machine's drift between repetitions, which the ratio of the medians
    keeps."""
    parts = []
    for label, row in rows.items():
        base = _single(label)
        if base == label:
            continue
        ref = rows.get(base, {}).get("conn_per_s_by_rep") or {}
        mine = row.get("conn_per_s_by_rep") or {}
        ratios = [mine[k] / ref[k] for k in sorted(mine) if ref.get(k)]
        if ratios:
            parts.append(f"{label} " + " ".join(f"{x:.2f}" for x in ratios)
                         + f", median {statistics.median(ratios):.2f}")
    return "; ".join(parts)


def _reload_rows(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """The reload contract, every repetition: reloads done, their time, the
    load's failures by kind, 5xx, and what the SIGKILLed child held."""
    w = _label_width(rows)
    lines = [f"{'server':<{w}}{'rep':>4}{'req/s':>8}{'reloads':>8}{'p50 ms':>8}{'max ms':>8}"
             f"{'refused':>8}{'reset':>6}{'timeout':>8}{'other':>6}{'closed':>7}{'5xx':>5}"
             f"{'killed held':>12}"]
    for label, row in rows.items():
        gone = _unmeasured(label, row, w)
        if gone:
            lines.append(gone)
            continue
        for i, failures in enumerate(row["failures_per_rep"]):
            lines.append(
                f"{label:<{w}}{i + 1:>4}{_fmt(row['requests_per_s'], '.0f') if i == 0 else '':>8}"
                f"{row['reloads_per_rep'][i]:>8}"
                f"{_fmt(row['reload_p50_ms'] if i == 0 else None, '.0f'):>8}"
                f"{_fmt(row['reload_max_ms'] if i == 0 else None, '.0f'):>8}"
                f"{failures.get('refused', 0):>8}{failures.get('reset', 0):>6}"
                f"{failures.get('timeout', 0):>8}{failures.get('other', 0):>6}"
                f"{failures.get('closed', 0):>7}"
                f"{_fmt(row['responses_5xx_per_rep'][i], 'd'):>5}"
                f"{_fmt(row['killed_held_per_rep'][i], 'd'):>12}")
    lines.append("  (req/s and reload times: medians over the repetitions; a reload runs from "
                 "SIGHUP to the switch, every new child ready. closed: kept connections a "
                 "stopping child ended with Connection: close, and the killed child's)")
    return lines


#: A table column: its head, its width, and the cell of a row.
_Column = Tuple[str, int, Callable[[Dict[str, Any]], str]]


def _cell(key: str, spec: str, latency: bool = False) -> Callable[[Dict[str, Any]], str]:
    """The cell of ``row[key]`` formatted with ``spec`` (a latency: "-" when
    nothing completed)."""
    return lambda row: _fmt(_latency(row, key) if latency else row[key], spec)


#: The columns of a requests table, after req/s.
_REQUEST_COLUMNS: List[_Column] = [
    ("CPU us/req", 12, _cell("cpu_us_per_request", ".1f")),
    ("req p50 ms", 12, _cell("request_p50_ms", ".3f", latency=True)),
    ("req p99 ms", 12, _cell("request_p99_ms", ".2f", latency=True)),
    ("req max ms", 12, _cell("request_max_ms", ".1f", latency=True)),
]
_REQ_PER_S: _Column = ("req/s", 8, _cell("requests_per_s", ".0f"))


def _columns_rows(rows: Dict[str, Dict[str, Any]], columns: Sequence[_Column]) -> List[str]:
    """A table: the server, ``columns``, the failures; a line per row."""
    w = _label_width(rows)
    lines = [f"{'server':<{w}}" + "".join(f"{head:>{width}}" for head, width, _ in columns) +
             "  failures"]
    for label, row in rows.items():
        gone = _unmeasured(label, row, w)
        if gone:
            lines.append(gone)
            continue
        lines.append(f"{label:<{w}}" + "".join(f"{cell(row):>{width}}"
                                               for _, width, cell in columns) +
                     f"  {_failures_cell(row)}")
    return lines


def _requests_rows(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    return _columns_rows(rows, [_REQ_PER_S, *_REQUEST_COLUMNS])


def _http_lines(scenario: Scenario, rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """The table of an HTTP scenario, then a line for each server skipped
    (a peer that is not installed)."""
    shown = {label: row for label, row in rows.items()
             if not (row["skipped"] and row["requests_per_s"] is None)}
    lines = _idle_rows(shown) if scenario.kind == "idle" else \
        _http_rows(shown, scenario.ratio_peers())
    lines += [f"  ({label} skipped: {row['skipped']})" for label, row in rows.items()
              if label not in shown]
    return lines


def _http_rows(rows: Dict[str, Dict[str, Any]], peers: Sequence[str]) -> List[str]:
    """A requests table with the ratio of req/s to each of ``peers``, the
    connect p99 and the overflows."""
    heads = [f"x {peer.rsplit('-', 1)[-1]}" for peer in peers]
    rw = max([9] + [len(h) + 2 for h in heads])

    def ratio(peer: str) -> Callable[[Dict[str, Any]], str]:
        return lambda row: _fmt(row.get("req_ratio", {}).get(peer), ".2f")

    return _columns_rows(rows, [_REQ_PER_S, *[(h, rw, ratio(p)) for h, p in zip(heads, peers)],
                                *_REQUEST_COLUMNS,
                                ("connect p99 ms", 16, _cell("connect_p99_ms", ".2f", True)),
                                ("overflows", 11, _cell("listen_overflows", ".0f"))])


def _target_lines(scenario: Scenario, rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """Whether each fastaccept row meets each of the scenario's targets."""
    lines = []
    for label in HTTP_JUDGED:
        row = rows.get(label)
        if row is None or row["runs"] == 0:
            continue
        for what, peer, bound in scenario.targets:
            lines.append(f"  target {label}: {_judge(what, peer, bound, label, rows, scenario)}")
    return lines


def _judge(what: str, peer: str, bound: float, label: str, rows: Dict[str, Dict[str, Any]],
           scenario: Scenario) -> str:
    """One target, as "what is asked: what was measured, met|MISSED"."""
    row = rows[label]
    if what == "ratio":
        asked = f"req/s >= {bound:g}x {peer}'s"
        ratio = row.get("req_ratio", {}).get(peer)
        if ratio is None:
            other = rows.get(peer)
            why = (f"{peer} skipped ({other['skipped']})" if other and other["skipped"] else
                   f"{peer} not measured" if other is not None else f"{peer} not run")
            return f"{asked}: cannot be judged, {why}"
        return f"{asked}: {ratio:.2f}x, {'met' if ratio >= bound else 'MISSED'}"
    if what == "overflows":
        asked = f"at most {bound:g} overflows in every repetition"
        per_rep = row["listen_overflows_per_rep"]
        if not per_rep:
            return f"{asked}: not measured"
        shown = " ".join(str(o) for o in per_rep)
        return f"{asked}: {shown}, {'met' if max(per_rep) <= bound else 'MISSED'}"
    if what == "rtt_p99_ms":
        asked = (f"round trip p99 beside {scenario.idle_connections} idle connections "
                 f"< {bound:g} ms")
        p99 = _latency(row, "rtt_p99_ms")
        if p99 is None:
            return f"{asked}: not measured"
        return f"{asked}: {p99:.2f} ms, {'met' if p99 < bound else 'MISSED'}"
    raise ValueError(f"unknown target {what!r}")


def _idle_rows(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    w = _label_width(rows)
    lines = [f"{'':<{w}}{'alone (K=0)':>22}{'beside K idle':>22}{'ratio':>14}",
             f"{'server':<{w}}{'rtt p50 ms':>11}{'p99 ms':>11}{'rtt p50 ms':>11}{'p99 ms':>11}"
             f"{'x p50':>7}{'x p99':>7}{'RSS B/idle':>12}  {'failures'}"]
    for label, row in rows.items():
        gone = _unmeasured(label, row, w)
        if gone:
            lines.append(gone)
            continue
        lines.append(
            f"{label:<{w}}{_fmt(row['base_rtt_p50_ms'], '.3f'):>11}"
            f"{_fmt(row['base_rtt_p99_ms'], '.3f'):>11}"
            f"{_fmt(_latency(row, 'rtt_p50_ms'), '.3f'):>11}"
            f"{_fmt(_latency(row, 'rtt_p99_ms'), '.3f'):>11}"
            f"{_fmt(row['rtt_p50_ratio'], '.2f'):>7}"
            f"{_fmt(row['rtt_p99_ratio'], '.2f'):>7}"
            f"{_fmt(row['rss_per_idle_conn'], '.0f'):>12}  {_failures_cell(row)}")
    return lines


def report_dict(report: BenchReport) -> Dict[str, Any]:
    """Return everything, runs and medians, as JSON-ready data."""
    return {
        "meta": {
            "reps": report.reps, "quick": report.quick, "netns": report.netns,
            "netns_reason": report.netns_reason, "cpu_source": report.cpu_source,
            "cpu_iters_per_ms": report.cpu_iters_per_ms, "elapsed_s": report.elapsed_s,
            "client_warmup": report.client_warmup,
            "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "clk_tck": os.sysconf("SC_CLK_TCK"),
        },
        "scenarios": {name: asdict(SCENARIOS[name]) for name in report.scenarios},
        "servers": report.servers,
        "medians": summarize(report),
        "runs": [asdict(r) for r in report.runs],
    }


def plot(report: BenchReport, path: str) -> None:
    """Draw CPU/conn and overflows per server, and the burst's queue depth, to ``path``."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'fastaccept[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(report)
    # The connection scenarios only: the others measure other things.
    scenarios = [s for s in report.scenarios if SCENARIOS[s].kind == "connections"]
    burst = next((s for s in ("burst", "burst-cpu", "burst-2048") if s in scenarios), None)
    cols = 3
    queue_rows = (len(report.servers) + cols - 1) // cols if burst else 0
    fig = plt.figure(figsize=(12, 8 + 2.6 * queue_rows))
    grid = fig.add_gridspec(2 + queue_rows, cols, height_ratios=[3, 3] + [2] * queue_rows)
    width = 0.8 / max(1, len(report.servers))
    xs = range(len(scenarios))
    for row, (key, title, log) in enumerate((
            ("cpu_us_per_conn", "server CPU per connection (us, log scale)", True),
            ("listen_overflows", "TcpExt ListenOverflows per run", False))):
        ax = fig.add_subplot(grid[row, :])
        for j, label in enumerate(report.servers):
            values = [summary[s].get(label, {}).get(key) or 0 for s in scenarios]
            ax.bar([x + j * width for x in xs], values, width, label=label)
        ax.set_xticks([x + width * (len(report.servers) - 1) / 2 for x in xs])
        ax.set_xticklabels(scenarios)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{title}, median of {report.reps}")
        ax.legend(fontsize="small", ncol=len(report.servers))
    if burst:
        backlog = SCENARIOS[burst].backlog
        first = None
        for i, label in enumerate(report.servers):
            ax = fig.add_subplot(grid[2 + i // cols, i % cols], sharey=first)
            first = first or ax
            run = next((r for r in report.runs if r.scenario == burst and r.server == label
                        and r.queue_samples), None)
            if run is not None:
                # The samples are the changes of depth: draw them as steps.
                ax.plot([t for t, _ in run.queue_samples], [d for _, d in run.queue_samples],
                        drawstyle="steps-post", linewidth=1)
            ax.axhline(backlog, color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"{label}: accept queue during '{burst}'", fontsize="small")
            ax.set_xlabel("s since the burst started", fontsize="small")
            ax.tick_params(labelsize="small")
        fig.text(0.01, 0.005, f"accept queue depth sampled every {QUEUE_SAMPLE_S * 1000:g} ms "
                 f"(first repetition); dotted: the backlog ({backlog})", fontsize="small")
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------

def _names(values: Optional[List[str]], known: Dict[str, Any], what: str,
           named_only: Optional[Dict[str, Any]] = None) -> List[str]:
    """The names asked for, in the canonical order, once each (all of
    ``known`` when none is); ``named_only`` ones run only when named."""
    if not values:
        return list(known)
    everything = {**known, **(named_only or {})}
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in everything]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose from "
                         f"{', '.join(everything)}")
    return [n for n in everything if n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench verb's options to ``parser``."""
    parser.add_argument("--quick", action="store_true",
                        help="one repetition with fewer connections (under a minute)")
    parser.add_argument("--only", action="append", metavar="SERVER[,SERVER]",
                        help=f"servers to run (default all: {', '.join(SERVERS)}); also "
                             f"fastaccept variants, run only when named: "
                             f"{', '.join(VARIANTS)}")
    parser.add_argument("--scenario", action="append", metavar="NAME[,NAME]",
                        help=f"scenarios to run (default: {', '.join(DEFAULT_SCENARIOS)}; "
                             "also: " + ", ".join(n for n in SCENARIOS
                                                  if n not in DEFAULT_SCENARIOS) + ")")
    parser.add_argument("--reps", type=int, default=None,
                        help=f"repetitions (default {DEFAULT_REPS}; 1 with --quick)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="per-connection timeout in seconds (default: per scenario)")
    parser.add_argument("--json", metavar="FILE", help="write every run and the medians as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw CPU/conn, overflows and the burst's queue depth "
                             "(needs matplotlib: pip install 'fastaccept[plot]')")
    parser.add_argument("--no-netns", action="store_true",
                        help="stay in the host's network namespace (host-wide counters)")


def _progress_printer() -> Progress:
    tty = sys.stderr.isatty()

    def show(line: str) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + line)
            if not line.endswith("..."):
                sys.stderr.write("\n")
        elif not line.endswith("..."):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
    return show


def main(args: argparse.Namespace) -> int:
    """Run the bench verb with parsed ``args``; print the table; return the exit status."""
    scenarios = (_names(args.scenario, SCENARIOS, "scenario") if args.scenario
                 else list(DEFAULT_SCENARIOS))
    servers = _names(args.only, SERVERS, "server", VARIANTS)
    reps = args.reps if args.reps is not None else (1 if args.quick else DEFAULT_REPS)
    if reps < 1:
        raise ValueError(f"--reps must be >= 1, got {reps}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0, got {args.timeout}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before the runs, not after)
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'fastaccept[plot]'") from None
    from fastaccept.bench import loadgen  # noqa: F401  (fail early if the extension is missing)

    if args.no_netns:
        netns, reason = "host", "--no-netns"
    else:
        why = enter_private_netns()
        netns, reason = ("private", "") if why is None else ("host", why)
    progress = _progress_printer()
    running = {label for name in scenarios
               for label in scenario_servers(SCENARIOS[name], servers)}
    progress(f"bench: {len(scenarios)} scenarios x {len(running)} servers x {reps} reps; "
             f"network namespace: {netns}{' (' + reason + ')' if reason else ''}")
    try:
        report = run_bench(scenarios, servers, reps=reps, quick=args.quick,
                           timeout_s=args.timeout, netns=netns, netns_reason=reason,
                           progress=progress, only=bool(args.only))
    except KeyboardInterrupt:
        print("\ninterrupted (the server of the current run was stopped)", file=sys.stderr)
        return 130
    print(format_table(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report_dict(report), f, indent=1)
    if args.plot:
        plot(report, args.plot)
    return 1 if any(r.error for r in report.runs) else 0

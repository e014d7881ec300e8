"""Plain helpers shared by the test modules (conftest.py puts this folder on sys.path).

Descriptors and clients (fd_table, open_fds, read_to_eof, connect, Gate,
unread_bytes...), forked children (fork, wait_child), pipes (read_line),
what this machine has (has_loadgen, has_ipv6_loopback, needs_peer,
needs_tool), processes that must be gone (all_gone), the command line
(run_cli), the child programs of tests/children/ (child_path,
start_child, run_child, run_child_json, CommandChild) and the C parsers'
fuzz targets outside libFuzzer (replay_fuzz_corpus, clang_compiles_clean),
and the parsers' hypothesis profiles (PROFILE, scaled; FA_HYPOTHESIS_PROFILE
ci or dig).
Fixtures are in conftest.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import pytest
from hypothesis import HealthCheck, settings

from children.childlib import (may_run_realtime, read_request,  # noqa: F401  (the one copy,
                               thread_name, threads_named)     # children's too)

MAX_REPLY = 1 << 20
#: What the helpers and most handlers send and answer.
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
REPLY_OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: How long a blocked handler waits for the test to release it (a bound, not a delay).
GATE_S = 30.0
#: The checkout the tests come from; children never run from inside it.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
#: The programs the tests run in a child process, one a file.
CHILDREN = Path(__file__).resolve().parent / "children"


def fd_table() -> Dict[int, str]:
    """Return {fd: readlink target} for every descriptor this process holds."""
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass    # the directory fd listdir used, closed since
    return table


def open_fds() -> set:
    """Descriptors open now (without the one listdir itself used)."""
    return set(fd_table())


def read_to_eof(sock: socket.socket, limit: int = MAX_REPLY) -> bytes:
    """Read until the peer closes (the socket's own timeout bounds each recv)."""
    chunks = []
    size = 0
    while size < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def connect(address: Any, request: bytes = b"", timeout: float = 10.0) -> socket.socket:
    """A client connected to address (host, port, ...), request sent if any."""
    sock = socket.create_connection(tuple(address[:2]), timeout=timeout)
    if request:
        sock.sendall(request)
    return sock


def connect_many(address: Any, n: int, request: bytes = b"",
                 timeout: float = 10.0) -> List[socket.socket]:
    """n clients as connect() makes them; none left open if one fails."""
    clients: List[socket.socket] = []
    try:
        for _ in range(n):
            clients.append(connect(address, request, timeout))
    except BaseException:
        close_all(clients)
        raise
    return clients


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends a reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def close_all(socks: List[socket.socket]) -> None:
    for s in socks:
        s.close()


class Gate:
    """What blocked handlers wait on: shut until the test opens it (bounded by GATE_S).

    Call wait() in a handler, or give the gate itself as the handler;
    ``entered`` counts the handlers that reached it."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def wait(self) -> None:
        self.entered.release()
        self.open.wait(GATE_S)

    def __call__(self, conn: socket.socket, addr: Any) -> None:
        self.wait()


def fork() -> int:
    """os.fork(), without the DeprecationWarning of Python 3.12+ for a threaded
    process (the warning filter would turn it into an error after the child
    exists). The server's fork handlers are what the tests check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def kill_child(pid: int) -> None:
    """Kill and reap a forked child a test did not see exit (pid <= 0: none;
    one wait_child already killed and reaped at its timeout is left alone)."""
    if pid > 0:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def exit_child(pid: int, fd: int, timeout: float = 30.0) -> None:
    """Tell a forked child to exit (a line "exit" on fd, the pipe it reads),
    wait for it and check it exited with status 0."""
    os.write(fd, b"exit\n")
    status = wait_child(pid, timeout)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def wait_child(pid: int, timeout: float) -> int:
    """Exit status of a forked child; kill it and fail if it outlives timeout."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not exit within {timeout} s", pytrace=False)
        time.sleep(0.01)    # a poll interval; the loop re-checks the child


def read_line(fd: int, timeout: float, writer: Optional[subprocess.Popen] = None,
              stderr: Optional[Path] = None) -> bytes:
    """One line from a pipe, or fail after timeout (the writer may hang).

    Read byte by byte, so nothing past the line is consumed. ``writer``, the
    process at the other end, is named with its exit status if the pipe
    closes; ``stderr``, a file its stderr goes to, is shown on a failure."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no line within {timeout} s (got {data!r}){_tail(stderr)}",
                        pytrace=False)
        byte = os.read(fd, 1)
        if not byte:
            who = "the writer" if writer is None else f"the child (status {writer.poll()})"
            pytest.fail(f"{who} closed the pipe after {data!r}{_tail(stderr)}", pytrace=False)
        data += byte
    return data


def _tail(stderr: Optional[Path], size: int = 4000) -> str:
    if stderr is None or not stderr.exists():
        return ""
    return f"\nits stderr:\n{stderr.read_text(errors='replace')[-size:]}"


def has_loadgen() -> bool:
    """True if the bench's C extension (the load generator, c-inline) is built."""
    try:
        from fastaccept.bench import loadgen  # noqa: F401
        from fastaccept.bench._loadgen import serve_inline  # noqa: F401
    except ImportError:
        return False
    return True


#: Skips a test that needs fastaccept.bench._loadgen where it is not built.
needs_loadgen = pytest.mark.skipif(not has_loadgen(),
                                   reason="fastaccept.bench._loadgen is not built")


def needs_peer(label: str) -> Any:
    """A skip mark for a test of the bench's HTTP server ``label`` (a peer of
    httpservers, or fastaccept's, which never skips) where it is not installed."""
    from fastaccept.bench import runner, scenarios
    why = runner.server_missing(scenarios.SERVERS[label])
    return pytest.mark.skipif(why is not None, reason=f"{label}: {why}")


def needs_tool(name: str) -> Any:
    """A skip mark for a test that runs command ``name`` (wrk, ab) where it is missing."""
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed")


def all_gone(pids: List[int], timeout: float) -> bool:
    """Wait until none of pids is a live process (gone or a zombie); True if so in time."""
    deadline = time.monotonic() + timeout
    while any(process_state(p) not in (None, "Z") for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)    # a poll interval; the loop re-checks
    return True


def unread_bytes(server_port: int, client_port: int) -> Optional[int]:
    """Bytes the server's end of the open loopback connection between those
    ports has received and nobody has read yet (rx_queue of /proc/net/tcp
    and tcp6), or None when the kernel lists no such connection."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if (state in ("01", "08")         # ESTABLISHED, CLOSE_WAIT
                    and int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port):
                return int(queues.split(":")[1], 16)
    return None


def has_ipv6_loopback() -> bool:
    """True if a TCP socket can bind ::1 here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def no_new_fds() -> Iterator[None]:
    """Lower RLIMIT_NOFILE's soft limit to the lowest free descriptor number
    for the block: no new descriptor can be allocated (EMFILE), but every
    open one stays usable. The limit is restored on the way out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_cli(*args: Any, cwd: Union[str, Path], timeout: float = 60.0,
            text: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m fastaccept ARGS`` to its end from cwd (outside the source
    tree, so the installed package is imported); its output captured."""
    return subprocess.run([sys.executable, "-m", "fastaccept", *map(str, args)],
                          cwd=_scratch(cwd), capture_output=True, text=text, timeout=timeout)


# -- child programs (tests/children/) ------------------------------------------

def child_path(name: str) -> str:
    """The path of tests/children/NAME, a program the tests run in a child process."""
    path = CHILDREN / name
    if not path.is_file():
        raise FileNotFoundError(f"no child program {path}")
    return str(path)


def child_argv(name: str, *args: Any) -> List[str]:
    """The command line that runs the Python child NAME with ``args`` here.

    ``python FILE`` puts the child's own folder first on sys.path, not the
    working directory: it imports the installed fastaccept (and childlib)."""
    return [sys.executable, child_path(name), *map(str, args)]


def _scratch(cwd: Union[str, Path]) -> str:
    """cwd, if it is outside the source tree (a child's files and imports stay out of it)."""
    path = Path(cwd).resolve()
    if path == SOURCE_ROOT or SOURCE_ROOT in path.parents:
        raise ValueError(f"run children outside the source tree, not in {path}")
    return str(path)


def start_child(name: str, *args: Any, cwd: Union[str, Path],
                **popen: Any) -> subprocess.Popen:
    """Start the Python child NAME from cwd (a scratch directory); Popen's keywords."""
    return subprocess.Popen(child_argv(name, *args), cwd=_scratch(cwd), **popen)


def run_child(name: str, *args: Any, cwd: Union[str, Path], env: Optional[dict] = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the Python child NAME to its end from cwd; its output captured as text."""
    return subprocess.run(child_argv(name, *args), cwd=_scratch(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_child_json(name: str, *args: Any, cwd: Union[str, Path],
                   env: Optional[dict] = None, timeout: float = 60.0) -> Any:
    """Run the Python child NAME (its fd limit and fd table are its own); return
    the JSON of the last line it prints. Fail if it exits non-zero."""
    proc = run_child(name, *args, cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the child printed nothing; its stderr:\n{proc.stderr}"
    return json.loads(lines[-1])


class CommandChild:
    """children/command_server.py in a child process, and the test's end of its protocol.

    ``args`` are the child's options; its stderr goes to tmp_path/child.stderr.
    Call close() in a finally: it kills the child if it still runs."""

    def __init__(self, tmp_path: Path, *args: Any, env: Optional[dict] = None) -> None:
        self.stderr_path = tmp_path / "child.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = start_child("command_server.py", *args, cwd=tmp_path, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr)
        self.out = self.proc.stdout.fileno()

    def _answer(self, timeout: float) -> Any:
        return json.loads(read_line(self.out, timeout, self.proc, self.stderr_path))

    def address(self) -> tuple:
        """The server's address: the child's first line."""
        return tuple(self._answer(30.0)["address"])

    def ask(self, cmd: bytes, timeout: float = 20.0) -> dict:
        """Send one command line; return its answer."""
        self.proc.stdin.write(cmd + b"\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def quit(self) -> dict:
        """Shut the server down; return its final stats once the child exited 0."""
        final = self.ask(b"quit")
        assert self.proc.wait(timeout=20.0) == 0, self.stderr_path.read_text()
        return final

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10.0)
        self.proc.stdin.close()
        self.proc.stdout.close()


# -- supervisors (tests/supervise/) ------------------------------------------------

def process_state(pid: int) -> Optional[str]:
    """The state letter of process pid (R, S, Z...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def child_pids(pid: int) -> List[int]:
    """The children of process pid (zombies included), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def fd_targets(pid: int) -> List[str]:
    """What every descriptor of process pid points to (readlink of /proc/PID/fd/N)."""
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            pass
    return out


def connections_held(pid: int, port: int) -> int:
    """How many established connections to local ``port`` process pid holds
    (the bench's counter: one copy)."""
    from fastaccept.bench.runner import connections_held as held
    return held(pid, port)


def kill_busiest(pids: List[int], port: int) -> tuple:
    """SIGKILL the one of pids holding the most connections to port (once one
    holds some, within 2 s); return (its pid, the connections it held),
    counted under SIGSTOP (the bench's helpers: one copy)."""
    from fastaccept.bench.runner import busiest, kill_counting
    victim = busiest(pids, port)
    return victim, kill_counting(victim, port)


class SupervisorChild:
    """children/supervised.py in a process of its own (and its own session),
    and the test's end of its event lines.

    ``args`` are the child's options; its stderr goes to
    tmp_path/supervisor.stderr. ``events`` holds every event read so far.
    Call close() in a finally: it kills the session if anything still runs."""

    def __init__(self, tmp_path: Path, *args: Any, env: Optional[dict] = None,
                 pass_fds: tuple = ()) -> None:
        self.stderr_path = tmp_path / "supervisor.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = start_child("supervised.py", *args, cwd=tmp_path, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, start_new_session=True, pass_fds=pass_fds)
        self.out = self.proc.stdout.fileno()
        self.events: List[dict] = []
        self._taken: set = set()
        first = self.next("listening", 30.0)
        self.pid: int = first["pid"]
        self.address = tuple(first["address"][:2])
        self.layout: str = first["layout"]

    def _read(self, timeout: float) -> dict:
        event = json.loads(read_line(self.out, timeout, self.proc, self.stderr_path))
        self.events.append(event)
        return event

    def mark(self) -> int:
        """Where the events read so far end: next(since=mark()) looks only at later ones."""
        return len(self.events)

    def next(self, kind: str, timeout: float = 20.0, since: int = 0, **match: Any) -> dict:
        """The first event named ``kind`` whose fields have the values
        ``match`` gives and that no call returned yet, whether it was read
        already or comes later (from index ``since`` on); fail after
        ``timeout`` s."""
        def wanted(i: int, event: dict) -> bool:
            return (i >= since and i not in self._taken and event["event"] == kind and
                    all(event.get(k) == v for k, v in match.items()))
        for i, event in enumerate(self.events):
            if wanted(i, event):
                self._taken.add(i)
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {kind} event {match or ''} within {timeout} s; "
                            f"seen: {[e['event'] for e in self.events]}{_tail(self.stderr_path)}",
                            pytrace=False)
            event = self._read(left)
            if wanted(len(self.events) - 1, event):
                self._taken.add(len(self.events) - 1)
                return event

    def ready(self, n: int, timeout: float = 30.0, **match: Any) -> List[dict]:
        """The next n "ready" events."""
        return [self.next("ready", timeout, **match) for _ in range(n)]

    def seen(self, kind: str, **match: Any) -> List[dict]:
        """The events named ``kind`` read so far (matching ``match``)."""
        return [e for e in self.events
                if e["event"] == kind and all(e.get(k) == v for k, v in match.items())]

    def spawned_pids(self) -> List[int]:
        """Every child pid the supervisor reported, in order."""
        return [e["pid"] for e in self.seen("spawned")]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def finish(self, timeout: float = 30.0) -> dict:
        """Read to the "exit" event and wait for the process; return the event."""
        event = self.next("exit", timeout)
        self.proc.wait(timeout=timeout)
        return event

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10.0)
        else:
            try:    # children it left, if any (there should be none)
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.stdout.close()


# -- the C parsers' fuzz targets, without libFuzzer ----------------------------------

SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer"]
FUZZ_FLAGS = ["-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
              f"-I{SOURCE_ROOT / 'src'}", "-DFA_FUZZ_STANDALONE"]
_SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=66",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=66"}
_REPORT_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "check failed:")


def _run_sanitized(cmd: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=dict(os.environ, **_SAN_ENV), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def replay_fuzz_corpus(fuzz_c: str, parser_c: str, corpus: str, tmp_path: Path) -> None:
    """Build the fuzz target ``fuzz_c`` (paths from the checkout's root) with
    the parser ``parser_c`` under gcc's ASan and UBSan, standalone (its own
    main), and replay every file of ``corpus`` through it: the target's own
    checks abort on failure, and any sanitizer report fails the test. Skips
    when gcc is missing or cannot build with the sanitizers."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found on PATH")
    probe_c = tmp_path / "probe.c"
    probe_c.write_text("#include <stdlib.h>\nint main(void) { free(malloc(4)); return 0; }\n")
    probe = tmp_path / "probe"
    proc = _run_sanitized([gcc, *SAN_FLAGS, str(probe_c), "-o", str(probe)])
    if proc.returncode != 0 or _run_sanitized([str(probe)]).returncode != 0:
        pytest.skip(f"gcc cannot build and run with {' '.join(SAN_FLAGS)}: "
                    f"{proc.stderr.strip()[:300]}")
    binary = tmp_path / (Path(fuzz_c).stem + "_replay")
    proc = _run_sanitized([gcc, *FUZZ_FLAGS, *SAN_FLAGS, str(SOURCE_ROOT / fuzz_c),
                           str(SOURCE_ROOT / parser_c), "-o", str(binary)])
    assert proc.returncode == 0, f"compile failed:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    directory = SOURCE_ROOT / corpus
    files = sorted(p for p in directory.iterdir() if p.is_file())
    assert files, "the corpus is empty"
    proc = _run_sanitized([str(binary), str(directory)])
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    reports = [m for m in _REPORT_MARKERS if m in proc.stderr]
    assert not reports, f"report ({', '.join(reports)}):\n{output}"
    assert proc.returncode == 0, output
    assert f"replayed {len(files)} inputs" in proc.stdout, output


def clang_compiles_clean(source: str, tmp_path: Path) -> None:
    """Compile ``source`` (from the checkout's root) with clang, -Wall -Wextra
    -Werror -O2: no error, no warning. Skips when clang is missing."""
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang not found on PATH")
    cmd = [clang, *FUZZ_FLAGS, "-O2", "-c", str(SOURCE_ROOT / source),
           "-o", str(tmp_path / "out.o")]
    proc = _run_sanitized(cmd)
    assert proc.returncode == 0 and proc.stderr == "", f"{' '.join(cmd)}\n{proc.stderr}"


# -- the parsers' property tests: hypothesis profiles ---------------------------------

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
#: FA_HYPOTHESIS_PROFILE: "ci" (the default: 150 examples, derandomized) or
#: "dig" (20,000 random examples) for a long search by hand.
PROFILE_NAME = os.environ.get("FA_HYPOTHESIS_PROFILE", "ci")
PROFILE = {
    "ci": settings(max_examples=150, deadline=None, database=None, derandomize=True,
                   suppress_health_check=_SLOW),
    "dig": settings(max_examples=20000, deadline=None, database=None,
                    suppress_health_check=_SLOW),
}[PROFILE_NAME]


def scaled(n: int) -> settings:
    """The profile with n examples in ci (the dig profile keeps its own count)."""
    if PROFILE_NAME == "ci":
        return settings(PROFILE, max_examples=n)
    return PROFILE

"""Soak: millions of connections through one fastaccept server; RSS and fds stay flat.

    python benchmarks/soak.py                      # 3,000,000 connections, ~3 minutes
    python benchmarks/soak.py --connections 1000000 --warmup 10

A fastaccept server runs in a child process (8 workers, a handler that reads
the request and answers a short HTTP reply). This process drives it with the
C load generator (``fastaccept.bench.loadgen.run``, ``--concurrency`` connections in
flight) in chunks, while a sampler thread reads the child's resident set
(``VmRSS`` of /proc/PID/status) and its open descriptors (/proc/PID/fd) once
a second. It passes when:

- every connection completed (no failure of any kind) and the server
  accepted and handled exactly that many;
- after ``--warmup`` seconds of load, RSS stays within ``--rss-bound-mib`` of
  its lowest value (max - min of the samples after warm-up);
- once the load has ended, the fd count returns to its value before the load.

It prints the curve (one line per ``--print-every`` seconds) and a summary,
and exits 1 on a failed bound. Not part of the test suite: it takes minutes
and loads both CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

from fastaccept.bench import loadgen

SERVER_CHILD = r"""
import json, sys
import fastaccept

REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"

def handler(conn, addr):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    conn.sendall(REPLY)

server = fastaccept.Server(handler, "127.0.0.1", 0, workers=int(sys.argv[1]), backlog=4096)
server.start()
print(json.dumps({"address": server.address}), flush=True)
sys.stdin.read()                # until the parent closes our stdin
ok = server.shutdown(timeout=30.0)
print(json.dumps(dict(server.stats(), shutdown_ok=ok)), flush=True)
"""

#: (seconds since the load started, RSS in KiB, open fds)
Sample = Tuple[float, int, int]


def rss_kib(pid: int) -> int:
    """VmRSS of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Open descriptors of pid, less the transient ones under /proc (the
    server's monitor thread reads /proc/net/netstat once a second)."""
    n = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += not os.readlink(f"/proc/{pid}/fd/{name}").startswith("/proc/")
        except OSError:
            pass            # closed since
    return n


class Sampler(threading.Thread):
    """Samples a process's RSS and fd count every interval seconds."""

    def __init__(self, pid: int, t0: float, interval: float = 1.0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid, self.t0, self.interval = pid, t0, interval
        self.samples: List[Sample] = []
        self.stop_event = threading.Event()

    def sample(self) -> Sample:
        s = (time.monotonic() - self.t0, rss_kib(self.pid), fd_count(self.pid))
        self.samples.append(s)
        return s

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            self.sample()
            next_t += self.interval
            self.stop_event.wait(max(0.0, next_t - time.monotonic()))


def readline(stream, timeout: float) -> str:
    """One line from a child's stdout, or raise TimeoutError."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from the server within {timeout} s ({data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"the server exited ({data!r})")
        data += chunk
    return data.decode()


def slope_kib_per_min(samples: List[Sample]) -> float:
    """Least-squares slope of RSS over time."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(s[0] for s in samples) / n
    mr = sum(s[1] for s in samples) / n
    var = sum((s[0] - mt) ** 2 for s in samples)
    cov = sum((s[0] - mt) * (s[1] - mr) for s in samples)
    return cov / var * 60.0 if var else 0.0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=3_000_000,
                   help="connections to make, at least 1,000,000 for a soak (default 3,000,000)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--chunk", type=int, default=250_000,
                   help="connections per load-generator run (progress is printed per run)")
    p.add_argument("--max-seconds", type=float, default=900.0,
                   help="bound on the whole load (default 900)")
    p.add_argument("--warmup", type=float, default=15.0,
                   help="seconds of load before RSS must stay flat (default 15)")
    p.add_argument("--rss-bound-mib", type=float, default=8.0,
                   help="allowed RSS rise after warm-up, in MiB (default 8)")
    p.add_argument("--print-every", type=int, default=10,
                   help="print one curve line per this many seconds (default 10)")
    args = p.parse_args(argv)

    proc = subprocess.Popen([sys.executable, "-c", SERVER_CHILD, str(args.workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    failures: List[str] = []
    try:
        host, port = json.loads(readline(proc.stdout, 30.0))["address"][:2]
        warm = loadgen.run(host, port, connections=1000, concurrency=args.concurrency,
                           timeout=10.0).completed
        time.sleep(1.0)         # let the warm-up's connections close before the baseline
        fds_before = fd_count(proc.pid)
        t0 = time.monotonic()
        sampler = Sampler(proc.pid, t0)
        sampler.start()
        done = completed = 0
        totals = dict.fromkeys(loadgen.FAILURE_KINDS, 0)
        while done < args.connections:
            left_s = args.max_seconds - (time.monotonic() - t0)
            if left_s <= 0:
                failures.append(f"--max-seconds {args.max_seconds} passed after {done} "
                                "connections")
                break
            n = min(args.chunk, args.connections - done)
            r = loadgen.run(host, port, connections=n, concurrency=args.concurrency,
                            timeout=10.0, max_seconds=left_s)
            done += r.connections
            completed += r.completed
            for kind, v in r.failures.items():
                totals[kind] += v
            _, rss, fds = sampler.samples[-1] if sampler.samples else (0, 0, 0)
            print(f"{time.monotonic() - t0:7.1f} s  {done:>9,} connections  "
                  f"{r.conn_per_s:8,.0f} conn/s  rtt p99 {r.rtt_ms.p99:6.2f} ms  "
                  f"RSS {rss / 1024:6.1f} MiB  fds {fds}", flush=True)
            if r.connections < n:
                break
        load_s = time.monotonic() - t0
        # The last connections close as their clients read EOF; allow for it.
        deadline = time.monotonic() + 30.0
        while sampler.sample()[2] != fds_before and time.monotonic() < deadline:
            time.sleep(0.1)
        sampler.stop_event.set()
        sampler.join()
        fds_after = fd_count(proc.pid)
        proc.stdin.close()
        final = json.loads(readline(proc.stdout, 60.0))
        proc.wait(timeout=60.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    samples = sampler.samples
    during = [s for s in samples if s[0] <= load_s]
    after_warmup = [s for s in during if s[0] >= args.warmup]
    print("\ncurve (every {} s): t, RSS MiB, fds".format(args.print_every))
    last_printed = -args.print_every
    for t, rss, fds in samples:
        if t - last_printed >= args.print_every:
            print(f"  {t:7.1f}  {rss / 1024:7.2f}  {fds}")
            last_printed = t
    t, rss, fds = samples[-1]
    print(f"  {t:7.1f}  {rss / 1024:7.2f}  {fds}  (last)")

    print(f"\nconnections {done:,} in {load_s:.1f} s ({completed / load_s:,.0f} conn/s), "
          f"completed {completed:,}, failures {totals}")
    print(f"server: accepted {final['accepted']:,}, handled {final['handled']:,}, "
          f"handler errors {final['handler_errors']}, accept errors {final['accept_errors']}, "
          f"shutdown ok {final['shutdown_ok']}")
    if after_warmup:
        rss_values = [s[1] for s in after_warmup]
        rise_mib = (max(rss_values) - min(rss_values)) / 1024
        print(f"RSS after {args.warmup:g} s warm-up ({len(after_warmup)} samples): "
              f"min {min(rss_values)} KiB, max {max(rss_values)} KiB, "
              f"first {rss_values[0]}, last {rss_values[-1]}, "
              f"spread {max(rss_values) - min(rss_values)} KiB "
              f"(bound {args.rss_bound_mib:g} MiB), "
              f"slope {slope_kib_per_min(after_warmup):+.1f} KiB/min")
        if rise_mib > args.rss_bound_mib:
            failures.append(f"RSS rose {rise_mib:.2f} MiB after warm-up "
                            f"(bound {args.rss_bound_mib:g} MiB)")
    else:
        failures.append("no RSS sample after the warm-up: the load was shorter than --warmup")
    print(f"fds: {fds_before} before the load, peak {max(s[2] for s in samples)}, "
          f"{fds_after} after")
    if fds_after != fds_before:
        failures.append(f"fd count {fds_after} after the load, {fds_before} before")
    if done < args.connections:
        failures.append(f"only {done} of {args.connections} connections were made")
    if completed != done or any(totals.values()):
        failures.append(f"{done - completed} connections failed: {totals}")
    if not (final["accepted"] == final["handled"] == warm + completed) or final["handler_errors"]:
        failures.append("the server's counts do not match the completed connections")
    if not final["shutdown_ok"]:
        failures.append("the server's shutdown timed out")
    for f in failures:
        print("FAIL:", f)
    print("PASS" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

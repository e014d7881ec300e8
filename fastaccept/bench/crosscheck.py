"""Cross-check the bench's load generator against wrk and ab, on one server.

    python -m fastaccept.bench.crosscheck [--server LABEL] [--quick] [--rounds N]

starts one HTTP server of the bench (default ``fastaccept-wsgi-8``: the
WSGIServer of the HTTP scenarios, started as they start it, by
``runner.make_server``) and measures it with each client in turn, the two
modes of the HTTP scenarios:

    keep-alive  64 connections, HTTP/1.1 requests back to back on each:
                ``wrk -t 1 -c 64 -d D`` against the load generator's "http"
                framing (64 connections x R requests)
    close       one connection per request, HTTP/1.0, 64 at a time:
                ``ab -c 64 -n N`` against the load generator reading each
                reply to EOF (N connections)

and prints one table: requests, req/s, latency p50 and p99, the server's
CPU time per request over the client's run, and failures. Every client is
one thread (wrk ``-t 1``, ab, the load generator's C thread), so the numbers
measure the same server with the same client budget; they should agree
within the noise of a shared machine. The latencies are each tool's own:
wrk's and the load generator's keep-alive ones are request to response, and
in the close mode ab's (whole milliseconds) and the load generator's run
from the connect start to the end of the reply. A client that is not
installed (``apt-get install wrk apache2-utils``) is left out with a line
saying so.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from fastaccept.bench.runner import (HOST, ServerProcess, make_server, scenario_request,
                                     server_missing)
from fastaccept.bench.scenarios import HTTP_SERVERS, SCENARIOS, SERVERS

__all__ = ["Measured", "CONNECTIONS", "parse_wrk", "parse_ab", "run_wrk", "run_ab",
           "run_loadgen", "crosscheck", "format_rows", "build_parser", "main"]

#: Concurrent connections of every client: the HTTP scenarios' 64.
CONNECTIONS = 64
#: Seconds a single request may take before a client counts it as failed.
REQUEST_TIMEOUT_S = 10
#: (wrk seconds, loadgen keep-alive requests per connection, close-mode
#: connections) in a full run and with --quick.
FULL = (5, 1000, 10000)
QUICK = (1, 100, 1000)
#: How long a client tool may run beyond what it was asked: only stops a hang.
TOOL_GRACE_S = 60


@dataclass
class Measured:
    """One client's run against the server."""

    client: str
    mode: str
    requests: int = 0
    requests_per_s: float = 0.0
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    failures: int = 0
    cpu_us_per_request: Optional[float] = None
    #: what went wrong instead (the tool is missing, failed, printed no result)
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    """A wrk duration ("310.00us", "1.23ms", "2.00s") in milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> Measured:
    """What ``wrk --latency`` printed: requests, req/s, p50/p99, failures
    (socket errors and non-2xx/3xx responses). ValueError if it printed no result."""
    done = re.search(r"^\s*(\d+) requests in ", out, re.M)
    rate = re.search(r"^Requests/sec:\s*([0-9.]+)", out, re.M)
    if done is None or rate is None:
        raise ValueError("wrk printed no result")
    r = Measured("wrk", "keep-alive", requests=int(done.group(1)),
                 requests_per_s=float(rate.group(1)))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m is not None:
            setattr(r, attr, _ms(m.group(1)))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    if errors is not None:
        r.failures += sum(int(n) for n in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx is not None:
        r.failures += int(non2xx.group(1))
    return r


def _ab_field(out: str, name: str) -> Optional[str]:
    m = re.search(rf"^{re.escape(name)}:\s*(\S+)", out, re.M)
    return None if m is None else m.group(1)


def parse_ab(out: str) -> Measured:
    """What ``ab`` printed: complete requests, req/s, the 50% and 99% times,
    failures (failed and non-2xx). ValueError if it printed no result."""
    complete = _ab_field(out, "Complete requests")
    rate = _ab_field(out, "Requests per second")
    if complete is None or rate is None:
        raise ValueError("ab printed no result")
    r = Measured("ab", "close", requests=int(complete), requests_per_s=float(rate))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+(\d+)", out, re.M)
        if m is not None:
            setattr(r, attr, float(m.group(1)))
    for name in ("Failed requests", "Non-2xx responses"):
        value = _ab_field(out, name)
        if value is not None:
            r.failures += int(value)
    return r


def _run_tool(cmd: List[str], timeout: float) -> str:
    """Run a client tool; its stdout. RuntimeError if it failed."""
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{cmd[0]} exited with status {proc.returncode}: {tail[0]}")
    return proc.stdout


def run_wrk(url: str, seconds: int) -> Measured:
    """wrk on one thread with CONNECTIONS connections for ``seconds``."""
    out = _run_tool(["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{seconds}s",
                     "--timeout", f"{REQUEST_TIMEOUT_S}s", "--latency", url],
                    seconds + TOOL_GRACE_S)
    return parse_wrk(out)


def run_ab(url: str, requests: int) -> Measured:
    """ab, HTTP/1.0, one connection per request, CONNECTIONS at a time."""
    out = _run_tool(["ab", "-q", "-r", "-n", str(requests), "-c", str(CONNECTIONS),
                     "-s", str(REQUEST_TIMEOUT_S), url],
                    requests * REQUEST_TIMEOUT_S / CONNECTIONS + TOOL_GRACE_S)
    return parse_ab(out)


def run_loadgen(port: int, mode: str, count: int) -> Measured:
    """The load generator in ``mode``: "keep-alive" (CONNECTIONS connections,
    ``count`` requests each) or "close" (``count`` connections)."""
    from fastaccept.bench import loadgen

    if mode == "keep-alive":
        load = loadgen.run(HOST, port, connections=CONNECTIONS, concurrency=CONNECTIONS,
                           requests_per_connection=count, framing="http",
                           request=scenario_request(SCENARIOS["http-keepalive"], port),
                           timeout=REQUEST_TIMEOUT_S)
        latency = load.request_ms
    else:
        load = loadgen.run(HOST, port, connections=count, concurrency=CONNECTIONS,
                           request=scenario_request(SCENARIOS["http-close"], port),
                           timeout=REQUEST_TIMEOUT_S)
        latency = load.rtt_ms          # connect start to EOF, as ab's
    done = load.completed > 0
    return Measured("loadgen", mode, requests=load.requests, requests_per_s=load.requests_per_s,
                    p50_ms=latency.p50 if done else None, p99_ms=latency.p99 if done else None,
                    failures=sum(load.failures.values()))


def crosscheck(server: str = "fastaccept-wsgi-8", quick: bool = False,
               rounds: int = 1) -> List[Measured]:
    """Start ``server`` once; run every client against it ``rounds`` times,
    alternating (loadgen then wrk, loadgen then ab); return the runs."""
    if server not in HTTP_SERVERS:
        raise ValueError(f"server must be one of {', '.join(HTTP_SERVERS)}, got {server!r}")
    wrk_s, per_conn, close_n = QUICK if quick else FULL
    spec = SERVERS[server]
    why = server_missing(spec)
    if why is not None:
        raise ValueError(f"{server}: {why}")
    runs: List[Measured] = []
    proc = make_server(SCENARIOS["http-keepalive"], spec)
    with proc:
        url = f"http://{HOST}:{proc.port}/"
        for _ in range(rounds):
            for mode, tool in (("keep-alive", "wrk"), ("close", "ab")):
                for client in ("loadgen", tool):
                    runs.append(_measure(proc, client, mode, url, wrk_s, per_conn, close_n))
    return runs


def _measure(proc: ServerProcess, client: str, mode: str, url: str, wrk_s: int,
             per_conn: int, close_n: int) -> Measured:
    """One client's run, with the server's CPU time over it."""
    if client != "loadgen" and shutil.which(client) is None:
        package = "apache2-utils" if client == "ab" else client
        return Measured(client, mode, error=f"{client} is not installed "
                                            f"(apt-get install {package})")
    cpu0 = proc.wait_idle()
    try:
        if client == "loadgen":
            r = run_loadgen(proc.port, mode, per_conn if mode == "keep-alive" else close_n)
        elif client == "wrk":
            r = run_wrk(url, wrk_s)
        else:
            r = run_ab(url, close_n)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        return Measured(client, mode, error=str(e))
    cpu1 = proc.wait_idle()
    if r.requests:
        r.cpu_us_per_request = (cpu1 - cpu0) / 1000.0 / r.requests
    return r


def _cell(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_rows(runs: Sequence[Measured]) -> List[str]:
    """The table of ``runs``, a line each (an error line for a run that failed)."""
    lines = [f"{'mode':<12}{'client':<9}{'requests':>10}{'req/s':>10}{'p50 ms':>9}"
             f"{'p99 ms':>9}{'server CPU us/req':>19}  failures"]
    for r in runs:
        head = f"{r.mode:<12}{r.client:<9}"
        if r.error is not None:
            lines.append(f"{head}{r.error}")
            continue
        lines.append(f"{head}{r.requests:>10}{r.requests_per_s:>10.0f}"
                     f"{_cell(r.p50_ms, '.2f'):>9}{_cell(r.p99_ms, '.2f'):>9}"
                     f"{_cell(r.cpu_us_per_request, '.1f'):>19}  {r.failures}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m fastaccept.bench.crosscheck``."""
    p = argparse.ArgumentParser(prog="python -m fastaccept.bench.crosscheck",
                                description="measure one HTTP server of the bench with the "
                                            "load generator, wrk and ab, side by side")
    p.add_argument("--server", choices=HTTP_SERVERS, default="fastaccept-wsgi-8",
                   help="the server (default fastaccept-wsgi-8)")
    p.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    p.add_argument("--rounds", type=int, default=1,
                   help="how many times every client runs, alternating (default 1)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the cross-check and print its table; return the exit status (1 if
    a run failed or counted failures)."""
    args = build_parser().parse_args(argv)
    if args.rounds < 1:
        print("--rounds must be >= 1", file=sys.stderr)
        return 2
    wrk_s, per_conn, close_n = QUICK if args.quick else FULL
    t0 = time.monotonic()
    try:
        runs = crosscheck(args.server, args.quick, args.rounds)
    except ValueError as e:
        print(f"crosscheck: {e}", file=sys.stderr)
        return 2
    shapes: Dict[str, str] = {
        "keep-alive": f"{CONNECTIONS} connections: wrk -t 1 -d {wrk_s}s; loadgen "
                      f"{per_conn} requests each (HTTP/1.1)",
        "close": f"{close_n} connections, {CONNECTIONS} at a time, one HTTP/1.0 GET each "
                 "(ab, loadgen)",
    }
    print(f"crosscheck: {args.server}, {args.rounds} round(s), "
          f"{time.monotonic() - t0:.0f} s")
    for mode, shape in shapes.items():
        print(f"  {mode}: {shape}")
    print("\n".join(format_rows(runs)))
    bad = any((r.error is not None and "not installed" not in r.error) or r.failures
              for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

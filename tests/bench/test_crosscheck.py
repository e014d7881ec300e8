"""fastaccept.bench.crosscheck: the load generator beside wrk and ab.

The parsers read the tools' real output formats (samples below, as wrk 4.1
and ab 2.3 print them); a run against fastaccept's WSGIServer completes with
every client (skipped where wrk or ab is not installed). No timing is ever
asserted: the numbers only have to exist.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from fa_testutil import needs_loadgen, needs_tool
from fastaccept.bench import crosscheck

WRK_OUT = """\
Running 1s test @ http://127.0.0.1:41233/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms    3.72ms  53.56ms   97.09%
    Req/Sec    48.00k     3.11k   51.53k    80.00%
  Latency Distribution
     50%  812.00us
     75%    1.05ms
     90%    1.46ms
     99%   21.31ms
  47748 requests in 1.00s, 6.47MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  47662.31
Transfer/sec:      6.46MB
"""

AB_OUT = """\
Server Software:        fastaccept
Server Hostname:        127.0.0.1
Server Port:            41233

Document Path:          /
Document Length:        13 bytes

Concurrency Level:      64
Time taken for tests:   0.083 seconds
Complete requests:      1000
Failed requests:        2
   (Connect: 0, Receive: 0, Length: 2, Exceptions: 0)
Non-2xx responses:      1
Total transferred:      133000 bytes
HTML transferred:       13000 bytes
Requests per second:    12006.20 [#/sec] (mean)
Time per request:       5.331 [ms] (mean)

Percentage of the requests served within a certain time (ms)
  50%      4
  66%      5
  75%      5
  80%      6
  90%      8
  95%     11
  98%     14
  99%     15
 100%     17 (longest request)
"""


def test_parse_wrk():
    r = crosscheck.parse_wrk(WRK_OUT)
    assert (r.client, r.mode, r.requests, r.requests_per_s) == ("wrk", "keep-alive", 47748,
                                                                47662.31)
    assert r.p50_ms == pytest.approx(0.812) and r.p99_ms == pytest.approx(21.31)
    assert r.failures == 2 + 1 + 4          # socket errors and non-2xx/3xx


def test_parse_wrk_without_latency_or_errors():
    plain = "\n".join(ln for ln in WRK_OUT.splitlines()
                      if "%" not in ln and "errors" not in ln and "Non-2xx" not in ln)
    r = crosscheck.parse_wrk(plain)
    assert (r.p50_ms, r.p99_ms, r.failures) == (None, None, 0)


def test_parse_ab():
    r = crosscheck.parse_ab(AB_OUT)
    assert (r.client, r.mode, r.requests, r.requests_per_s) == ("ab", "close", 1000, 12006.2)
    assert (r.p50_ms, r.p99_ms, r.failures) == (4.0, 15.0, 2 + 1)


@pytest.mark.parametrize("parse", [crosscheck.parse_wrk, crosscheck.parse_ab])
def test_parsers_refuse_what_is_no_result(parse):
    with pytest.raises(ValueError, match="printed no result"):
        parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_durations():
    assert crosscheck._ms("310.00us") == pytest.approx(0.31)
    assert crosscheck._ms("2.00s") == 2000.0 and crosscheck._ms("1.50ms") == 1.5
    with pytest.raises(ValueError):
        crosscheck._ms("fast")


def test_format_rows_shows_errors_in_place():
    rows = crosscheck.format_rows([
        crosscheck.Measured("loadgen", "close", requests=10, requests_per_s=100.0, p50_ms=1.0,
                            p99_ms=2.0, cpu_us_per_request=30.5),
        crosscheck.Measured("ab", "close", error="ab is not installed (apt-get install "
                                                 "apache2-utils)")])
    assert rows[0].split() == ["mode", "client", "requests", "req/s", "p50", "ms", "p99", "ms",
                               "server", "CPU", "us/req", "failures"]
    assert rows[1].split() == ["close", "loadgen", "10", "100", "1.00", "2.00", "30.5", "0"]
    assert rows[2] == "close       ab       ab is not installed (apt-get install apache2-utils)"


def test_unknown_server_is_refused():
    with pytest.raises(ValueError, match="server must be one of"):
        crosscheck.crosscheck("fastaccept-8")


@needs_loadgen
def test_a_missing_tool_is_left_out_with_a_line(monkeypatch, no_leaks):
    monkeypatch.setattr(crosscheck.shutil, "which", lambda name: None)
    monkeypatch.setattr(crosscheck, "QUICK", (1, 5, 50))
    runs = crosscheck.crosscheck("fastaccept-wsgi-1", quick=True)
    assert [(r.mode, r.client) for r in runs] == [("keep-alive", "loadgen"), ("keep-alive", "wrk"),
                                                  ("close", "loadgen"), ("close", "ab")]
    loadgen_runs = [r for r in runs if r.client == "loadgen"]
    assert [r.requests for r in loadgen_runs] == [64 * 5, 50]
    assert all(r.error is None and r.failures == 0 for r in loadgen_runs)
    assert runs[1].error == "wrk is not installed (apt-get install wrk)"
    assert runs[3].error == "ab is not installed (apt-get install apache2-utils)"


@needs_loadgen
@needs_tool("wrk")
@needs_tool("ab")
def test_crosscheck_quick_against_fastaccept(tmp_path):
    """The module's command: every client measures the same WSGIServer."""
    proc = subprocess.run([sys.executable, "-m", "fastaccept.bench.crosscheck", "--quick"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = {tuple(ln.split()[:2]): ln.split() for ln in proc.stdout.splitlines()
            if ln.startswith(("keep-alive ", "close "))}
    assert set(rows) == {("keep-alive", "loadgen"), ("keep-alive", "wrk"),
                         ("close", "loadgen"), ("close", "ab")}
    for cells in rows.values():
        assert int(cells[2]) > 0 and float(cells[3]) > 0, cells     # requests, req/s
        assert cells[-1] == "0", cells                              # failures

"""fastaccept.supervise.checks: the kernel self-check's lines."""
from __future__ import annotations

import logging
import resource
import socket

import pytest

from fastaccept.supervise import checks


@pytest.fixture
def lsock(no_leaks):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s
    s.close()


def test_backlog_as_asked_is_information(lsock):
    level, line = checks.backlog_check(lsock, 64, somaxconn=4096)
    assert level == logging.INFO
    assert line == "kernel check: effective backlog 64, net.core.somaxconn 4096"


def test_a_capped_backlog_is_a_warning(lsock):
    level, line = checks.backlog_check(lsock, 8192, somaxconn=64)
    assert level == logging.WARNING
    assert "backlog 8192 is capped by net.core.somaxconn: the effective backlog is 64" in line


@pytest.mark.parametrize("listeners, processes, words", [
    (1, 4, "(one queue shared by 4 processes)"),
    (4, 4, "per listener (4 SO_REUSEPORT listeners, one queue each)"),
    (1, 1, "(inherited listener)"),
])
def test_backlog_says_how_the_queue_is_shared(lsock, listeners, processes, words):
    asked = None if words == "(inherited listener)" else 64
    assert words in checks.backlog_check(lsock, asked, listeners, processes)[1]


def test_nofile_enough_and_not(no_leaks):
    assert checks.nofile_check(1000, nofile=2000)[0] == logging.INFO
    level, line = checks.nofile_check(10000, nofile=1024)
    assert level == logging.WARNING
    assert "ulimit -n is 1024 but max_connections is 10000" in line
    assert "960 open connections" in line and "10064 or more" in line
    assert checks.nofile_check(10, nofile=resource.RLIM_INFINITY)[0] == logging.INFO


def test_nofile_counts_every_process_against_file_max():
    level, line = checks.nofile_check(10000, 4, nofile=20000, file_max=10**6)
    assert level == logging.INFO and "4 processes: up to 40256 descriptors" in line
    level, line = checks.nofile_check(10000, 4, nofile=20000, file_max=30000)
    assert level == logging.WARNING and "more than fs.file-max 30000" in line


@pytest.mark.parametrize("migrate, level, words", [
    (True, logging.INFO, "is on"),
    (False, logging.WARNING, "is off"),
    (None, logging.WARNING, "has no net.ipv4.tcp_migrate_req"),
])
def test_migrate_message(migrate, level, words):
    got = checks.migrate_message(migrate)
    assert got[0] == level and words in got[1]


def test_migrate_is_checked_only_with_reuseport():
    assert checks.migrate_check(False) is None
    assert checks.migrate_check(True) is not None


def test_log_checks_logs_each_line_at_its_level(caplog):
    with caplog.at_level(logging.INFO, logger="fastaccept"):
        checks.log_checks([(logging.INFO, "a"), None, (logging.WARNING, "b")])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "a"), (logging.WARNING, "b")]

"""fastaccept.supervise.wakeup: the signals a wake-up pipe holds."""
from __future__ import annotations

import os
import signal

from fastaccept.supervise import wakeup


def test_signals_written_in_order_with_repeats_then_none():
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.write(w, bytes([signal.SIGHUP, signal.SIGTERM, signal.SIGHUP]))
        assert wakeup.signals_written(r) == [signal.SIGHUP, signal.SIGTERM, signal.SIGHUP]
        assert wakeup.signals_written(r) == []          # drained: nothing blocks
    finally:
        os.close(r)
        os.close(w)


def test_signals_written_stops_at_a_closed_writer():
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.write(w, bytes([signal.SIGINT]))
        os.close(w)
        w = -1
        assert wakeup.signals_written(r) == [signal.SIGINT]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_ignore_does_nothing():
    assert wakeup.ignore(signal.SIGTERM, None) is None

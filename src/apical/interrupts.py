"""SIGINT and SIGTERM as a request to save and stop, for the loops of long runs.

Inside `stop_signals()` the first SIGINT or SIGTERM only sets `stop.requested`; the loop
checks it (a Python attribute, no host sync) where it can checkpoint, saves, and raises
`apical.errors.Interrupted` saying how to continue. A second SIGINT interrupts at once.
Outside the main thread signals cannot be caught, and are left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Stop:
    requested: bool = False
    signal: str | None = None  # "SIGINT" or "SIGTERM"


@contextlib.contextmanager
def stop_signals() -> Iterator[Stop]:
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested, stop.signal = True, signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

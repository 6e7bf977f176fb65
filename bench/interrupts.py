"""Ctrl-C and SIGTERM while a grid runs: the first stops it cleanly after any critical step, the
second at once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupts:
    """Ctrl-C for the grid's duration: the first raises KeyboardInterrupt, held back while a
    critical step (claiming, writing a record, releasing) finishes; the second ends the process
    at once with status 130, whatever it is doing. SIGTERM (scancel, kill, a launcher stopping
    its workers) stops the grid as the first Ctrl-C does; a repeated SIGTERM is ignored, since
    scancel and a launcher may each send one. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.count = 0
        self.depth = 0
        self.pending = False
        self.terminated = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        # Python lets only the main thread set handlers; elsewhere the signals keep theirs.
        if threading.current_thread() is threading.main_thread():
            self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle_term)
        return self

    def __exit__(self, *exc: object) -> None:
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, old in self._old.items():
            # None: the old handler was not set from Python; the default is the closest
            signal.signal(signum, old if old is not None else defaults[signum])

    def _handle_term(self, signum: int, frame: Any) -> None:
        if not self.terminated:
            self.terminated = True
            self._handle(signum, frame)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            _hard_exit()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _say(f"\n{name}: stopping; finished cells are saved (Ctrl-C again stops at once)\n")
        if self.depth:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A step that must not be cut in half by the first Ctrl-C (it is raised right after)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


def _say(text: str) -> None:
    # Signal handlers print with os.write: the console may be mid-write in the interrupted code.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _hard_exit() -> None:
    _say("Ctrl-C again: stopped at once (the cell in progress has no record)\n")
    with contextlib.suppress(OSError):
        if os.isatty(1):
            os.write(1, b"\x1b[?25h")  # the progress bars hide the cursor; give it back
    os._exit(130)

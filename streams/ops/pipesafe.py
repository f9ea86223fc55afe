"""Standard output and error that a closed pipe cannot break.

``lifecycle-triggers dev --sample 2>&1 | tee log``: Ctrl-C stops ``tee`` too, and the next write
to the pipe raised BrokenPipeError inside Faust's SIGINT handler (it writes "-INT-" first), so
the shutdown never started and the command ignored Ctrl-C. ``ledger show ID | head -5`` ended in
a BrokenPipeError traceback. Once the reader is gone, the stream's file descriptor is pointed at
/dev/null and writing goes on quietly: shutdown, clean-up and the exit code are unaffected.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO


class PipeSafe:
    """A text stream proxy whose write and flush survive the reader's end of a pipe."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_pipe = False

    def _reader_gone(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass  # no file descriptor (a test's stream): writes are dropped below

    def write(self, text: str) -> int:
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._reader_gone()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
            try:
                self._stream.flush()  # what was buffered goes to /dev/null now
            except OSError:
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_standard_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` pipe-safe (once, before logging is set up)."""
    if not isinstance(sys.stdout, PipeSafe):
        sys.stdout = PipeSafe(sys.stdout)
    if not isinstance(sys.stderr, PipeSafe):
        sys.stderr = PipeSafe(sys.stderr)

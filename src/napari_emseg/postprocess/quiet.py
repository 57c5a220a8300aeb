"""Keep a C/C++ library's console output out of the user's terminal and napari.

waterz prints progress lines from C++ (``std::cout``) and from its Cython wrapper (``print``).
:func:`captured_stdout` points file descriptor 1 at a temporary file around a call, flushes the
C runtime's buffers before pointing it back, and hands the text to ``logging`` at debug level,
so nothing reaches the terminal and ``-vv`` still shows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["captured_stdout"]

logger = logging.getLogger(__name__)

_LOCK = threading.RLock()


def _flush_c_stdio() -> None:
    """Flush the C runtime's stdout buffer (where ``std::cout`` writes without ``endl``)."""
    try:
        libc = ctypes.CDLL(None)
        libc.fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C runtime to flush (Windows)
        pass


@contextlib.contextmanager
def captured_stdout(name: str = "waterz") -> Iterator[None]:
    """Send everything written to stdout (Python and C level) inside the block to the log.

    The redirection is process-wide (file descriptor 1), so it is held as briefly as possible
    and serialised with a lock; other threads printing meanwhile are captured too.
    """
    with _LOCK:
        try:
            sys.stdout.flush()
        except (AttributeError, ValueError):  # pragma: no cover - closed or replaced stdout
            pass
        _flush_c_stdio()
        saved = os.dup(1)
        py_buffer = io.StringIO()
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                with contextlib.redirect_stdout(py_buffer):
                    yield
            finally:
                _flush_c_stdio()
                os.dup2(saved, 1)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode(errors="replace") + py_buffer.getvalue()
        if text.strip() and logger.isEnabledFor(logging.DEBUG):
            for line in text.strip().splitlines():
                logger.debug("%s: %s", name, line)

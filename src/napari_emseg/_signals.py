"""SIGTERM behaves as Ctrl-C: ``timeout``, SLURM and ``docker stop`` never lose a training run.

Schedulers stop a job with SIGTERM (then SIGKILL after a grace period: 10 s for ``docker stop``,
``KillWait`` for SLURM). Python's default for SIGTERM is to die at once, so a fine-tune or a
pretraining run lost everything since its last periodic checkpoint. Inside
:func:`sigterm_as_interrupt` (the CLI installs it around every command) a SIGTERM raises
``KeyboardInterrupt`` exactly as Ctrl-C does, so the code that saves the best/last state on
Ctrl-C saves it on SIGTERM too.

Code that must not be cut in two (an optimiser update, writing a checkpoint) runs inside
:func:`deferred_sigterm`: a SIGTERM that arrives there is held and raised as
``KeyboardInterrupt`` when the block ends. A second SIGTERM is never held. The previous
handler is restored when :func:`sigterm_as_interrupt` exits; outside the main thread (where
Python cannot install handlers) both context managers do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigterm_as_interrupt", "deferred_sigterm", "sigterm_pending"]

logger = logging.getLogger(__name__)

_state = {"installed": 0, "defer": 0, "pending": False}


def _handler(signum: int, frame: object) -> None:
    if _state["defer"] > 0 and not _state["pending"]:
        _state["pending"] = True
        logger.warning("terminated (signal %d): finishing the current update, then saving", signum)
        return
    _state["pending"] = False
    raise KeyboardInterrupt(f"terminated by signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C); the previous handler after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _handler)
    except (ValueError, OSError):  # embedded interpreters may refuse
        yield
        return
    _state["installed"] += 1
    try:
        yield
    finally:
        _state["installed"] -= 1
        if _state["installed"] == 0:
            _state["pending"] = False
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_sigterm() -> Iterator[None]:
    """Within: a (first) SIGTERM is held, then raised as ``KeyboardInterrupt`` when the block ends."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    if _state["defer"] == 0 and _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt("terminated by SIGTERM")


def sigterm_pending() -> bool:
    """Whether a SIGTERM is being held by :func:`deferred_sigterm`."""
    return bool(_state["pending"])

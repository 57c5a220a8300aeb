"""One writer per output: an exclusive lock file beside the output for the length of a run.

``with output_lock("seg.zarr", command=sys.argv):`` creates ``seg.zarr.lock`` with
``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems) holding the writer's pid, host,
start time and command. A second writer of the same output is refused with a
:class:`LockError` naming the holder. A lock left by a process that died (same host, pid no
longer running) is taken over with a warning. The lock is removed when the ``with`` block ends,
however it ends (return, exception, cancel, generator closed).

Arrays inside a container share the container's lock (``seg.zarr/predictions`` locks
``seg.zarr``), so a command and the library calls it makes never exclude each other: the lock is
re-entrant within one thread of one process.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import EmsegError

__all__ = ["LockError", "output_lock", "locks_output", "lock_path", "read_lock"]

logger = logging.getLogger(__name__)

_CONTAINERS = (".zarr", ".n5")
_UNREADABLE_GRACE_S = 30.0  # a lock file still being written by its creator reads as empty
_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth
_held_guard = threading.Lock()


class LockError(EmsegError):
    """Another run is writing the same output; the message names it."""


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of an output: ``<container>.lock`` beside the file, folder or zarr/N5 container."""
    p = Path(os.path.abspath(os.fspath(out)))
    for i, part in enumerate(p.parts):
        if part.lower().endswith(_CONTAINERS) and i > 0:
            p = Path(*p.parts[: i + 1])
            break
    return p.with_name(p.name + ".lock")


def read_lock(path: str | os.PathLike) -> dict | None:
    """The holder recorded in a lock file (``None``: missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, command: Sequence[str] | str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``out`` for the ``with`` block (see the module docstring).

    Raises
    ------
    LockError
        Another live process (or one on another host) holds it.
    """
    path = lock_path(out)
    key = (str(path), threading.get_ident())
    with _held_guard:
        if key in _held:  # this thread holds it already (a command and the jobs it runs)
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    token = _acquire(path, out, command)
    with _held_guard:
        _held[key] = 1
    try:
        yield path
    finally:
        with _held_guard:
            _held.pop(key, None)
        _release(path, token)


def locks_output(param: str, when: Callable[[], bool] | None = None) -> Callable:
    """Decorate a generator job so it holds :func:`output_lock` of its argument ``param`` (when a
    path, and ``when()`` is true) from its first step to its end."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def job(*args, **kwargs):
            out = sig.bind_partial(*args, **kwargs).arguments.get(param)
            if not isinstance(out, (str, os.PathLike)) or (when is not None and not when()):
                return (yield from fn(*args, **kwargs))
            with output_lock(out):
                return (yield from fn(*args, **kwargs))

        return job

    return decorate


def _acquire(path: Path, out: str | os.PathLike, command: Sequence[str] | str | None) -> str:
    token = uuid.uuid4().hex
    info = {
        "pid": os.getpid(), "host": socket.gethostname(), "token": token,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(command) if isinstance(command, (list, tuple)) else (command or _argv()),
        "output": os.fspath(out),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LockError(f"{path.parent}: cannot create the output folder ({err.strerror or err})") from None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if not _stale(path, holder):
                raise LockError(_describe(out, path, holder)) from None
            _take_over(path, holder)
            continue
        except OSError as err:
            raise LockError(f"{path.parent}: cannot write there ({err.strerror or err}); "
                            "choose an output in a writable folder") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        return token
    raise LockError(_describe(out, path, read_lock(path)))


def _release(path: Path, token: str) -> None:
    holder = read_lock(path)
    if holder is not None and holder.get("token") != token:  # taken over meanwhile: not ours
        return
    with contextlib.suppress(OSError):
        path.unlink()


def _stale(path: Path, holder: dict | None) -> bool:
    """A lock whose process is gone (same host), or unreadable long after it was created."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except OSError:
            return True  # removed meanwhile: try again
    if holder.get("host") != socket.gethostname():
        return False  # another machine: its pid means nothing here
    return not _alive(int(holder.get("pid", -1)))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return False
    return True


def _take_over(path: Path, holder: dict | None) -> None:
    """Move a stale lock aside (atomic: of two takers only one moves it) and warn."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    moved = read_lock(aside)
    if holder is not None and (moved or {}).get("token") != holder.get("token"):
        # another taker replaced the stale lock with its own live one in between: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    who = f"pid {holder.get('pid')} ({holder.get('command') or 'unknown command'}, since {holder.get('started')})" \
        if holder else "an unreadable lock"
    logger.warning("%s: taking over the lock of a run that is gone: %s", path, who)


def _describe(out: str | os.PathLike, path: Path, holder: dict | None) -> str:
    if holder is None:
        who = "another run (its lock is being written)"
    else:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}: "
               f"{holder.get('command') or 'unknown command'}")
    return (f"{os.fspath(out)}: another napari-emseg run is writing it ({who}); wait for it to finish or "
            f"choose another output. If that run is gone, delete {path}")


def _argv() -> str:
    import sys

    return " ".join(sys.argv)

"""Progress events for long-running jobs, and the means to run and cancel them.

Every long job in napari-emseg (pretraining, fine-tuning, tiled inference, agglomeration) is a
*generator*: it yields :class:`Progress` events and ``return``\\ s its result. Three front ends
consume the same generator:

* the CLI and the tests call :func:`drain`, which shows a tqdm bar and returns the result;
* the napari widgets run it in a generator worker off the UI thread;
* anything that wants to stop a job early wraps it with :func:`cancellable` and a
  :class:`CancelToken`.

Cancelling never kills a job mid-step: :class:`Cancelled` is thrown into the generator at the
``yield`` where it is paused, so a job can catch it and return its best result so far (a
fine-tune returns its best checkpoint), or let it propagate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Progress",
    "Cancelled",
    "CancelToken",
    "Job",
    "cancellable",
    "drain",
    "Stopwatch",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress event of a long job.

    Parameters
    ----------
    step
        Units of work done so far (steps, tiles, blocks).
    total
        Units of work in all, or ``None`` when unknown (e.g. a time budget).
    stage
        Short name of the current phase, e.g. ``"predict"`` or ``"agglomerate"``.
    message
        Human-readable status line.
    metrics
        Scalars worth plotting live (loss, learning rate, validation score).
    eta_s
        Estimated seconds left, if the job can tell.
    preview
        Optional small array (e.g. the prediction on the current slice) for live display.
    """

    step: int = 0
    total: int | None = None
    stage: str = ""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    preview: Any = None

    @property
    def fraction(self) -> float | None:
        """Fraction done in [0, 1], or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.step / self.total))

    def describe(self) -> str:
        """One line such as ``predict 12/40 loss=0.213 eta 0:41``."""
        parts = [self.stage] if self.stage else []
        parts.append(f"{self.step}/{self.total}" if self.total else str(self.step))
        parts += [f"{k}={v:.4g}" for k, v in self.metrics.items()]
        if self.eta_s is not None:
            m, s = divmod(int(self.eta_s), 60)
            parts.append(f"eta {m}:{s:02d}")
        if self.message:
            parts.append(self.message)
        return " ".join(parts)


class Cancelled(Exception):
    """Thrown into a job at a ``yield`` when the user cancels it."""


Job = Generator[Progress, Any, T]
"""A long job: yields :class:`Progress`, returns its result."""


class CancelToken:
    """A thread-safe flag a front end sets to ask a running job to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next ``yield``."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def reset(self) -> None:
        self._event.clear()


def cancellable(job: Job[T], token: CancelToken) -> Job[T]:
    """Wrap ``job`` so that setting ``token`` throws :class:`Cancelled` into it.

    The wrapper forwards every event and returns what the job returns. If the job catches
    :class:`Cancelled` and returns (a best-so-far result), that is the wrapper's result; if the
    job lets it propagate, the wrapper raises :class:`Cancelled` to its caller.
    """
    thrown = False
    try:
        event = next(job)
        while True:
            yield event
            if token.cancelled and not thrown:  # once: the job may report while it wraps up
                thrown = True
                event = job.throw(Cancelled("cancelled by the user"))
            else:
                event = next(job)
    except StopIteration as stop:
        return stop.value


def relay(job: Job[T], transform: Callable[[Progress], Progress]) -> Job[T]:
    """Forward ``job``'s events through ``transform``; Cancel (or Ctrl-C) thrown into the relay
    is passed on to ``job``, and ``job``'s result is returned."""

    def one(event: Progress) -> Generator[Progress, Any, None]:
        yield transform(event)

    return relay_each(job, one)


def relay_each(job: Job[T], handle: Callable[[Progress], Generator[Progress, Any, Any]]) -> Job[T]:
    """:func:`relay` where each of ``job``'s events is handed to the generator ``handle(event)``,
    which yields any number of events (and may work between them) before ``job`` goes on;
    Cancel (or Ctrl-C) thrown into it, or raised by it, is passed on to ``job``."""
    try:
        event = next(job)
        while True:
            try:
                yield from handle(event)
            except (Cancelled, KeyboardInterrupt) as stop:
                event = job.throw(stop)
                continue
            event = next(job)
    except StopIteration as done:
        return done.value


def drain(
    job: Job[T],
    *,
    desc: str | None = None,
    show: bool = True,
    callback: Callable[[Progress], None] | None = None,
) -> T:
    """Run ``job`` to completion in this thread and return its result.

    Shows a tqdm progress bar when ``show`` is true (the CLI), calls ``callback`` with each
    event, and turns a Ctrl-C that arrives between events into :class:`Cancelled` thrown into
    the job, so a job that can return a partial result (a fine-tune's best checkpoint) does so.
    """
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(desc=desc, total=None, dynamic_ncols=True, leave=True)
    try:
        interrupted = False
        while True:
            try:
                event = job.throw(Cancelled("interrupted")) if interrupted else next(job)
            except StopIteration as stop:
                return stop.value
            interrupted = False
            try:
                if callback is not None:
                    callback(event)
                if bar is not None and isinstance(event, Progress):
                    _update_bar(bar, event)
            except KeyboardInterrupt:
                # Ctrl-C while the job is paused at a yield: let it stop cleanly. (Ctrl-C inside
                # the job's own code reaches the job first; jobs that keep partial results catch
                # KeyboardInterrupt as well as Cancelled.)
                logger.warning("interrupted: asking the job to stop and keep what it has")
                interrupted = True
    finally:
        if bar is not None:
            bar.close()


def _update_bar(bar: Any, event: Progress) -> None:
    if event.total is not None and bar.total != event.total:
        bar.total = event.total
    if event.stage:
        bar.set_description(event.stage, refresh=False)
    post = {k: f"{v:.4g}" for k, v in event.metrics.items()}
    if event.message:
        post["info"] = event.message
    bar.set_postfix(post, refresh=False)
    bar.n = event.step
    bar.refresh()


class Stopwatch:
    """Measures elapsed time and estimates the time left for ``step`` of ``total``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, step: int, total: int | None) -> float | None:
        if not total or step <= 0:
            return None
        return self.elapsed / step * max(0, total - step)

    def event(self, step: int, total: int | None, **kwargs: Any) -> Progress:
        """A :class:`Progress` with the ETA filled in."""
        return Progress(step=step, total=total, eta_s=self.eta(step, total), **kwargs)


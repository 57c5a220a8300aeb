"""Run core jobs (generators of Progress) off napari's UI thread, with progress and Cancel.

:class:`JobRunner` wraps a job in :func:`napari_emseg.progress.cancellable`, starts it in a
napari generator worker, mirrors its events on a napari progress bar, and reports errors as
napari notifications carrying the core's message (input errors without a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..errors import EmsegError
from ..progress import Cancelled, CancelToken, Progress, cancellable

logger = logging.getLogger(__name__)


class JobRunner:
    """One running job: start it, watch it, cancel it.

    Parameters
    ----------
    make_job
        Called in the worker thread to create the job generator (so even set-up work such as
        reading a volume happens off the UI thread).
    on_progress
        Called on the UI thread with each :class:`Progress`.
    on_done
        Called on the UI thread with the job's result.
    on_finish
        Called on the UI thread when the job ends, however it ends.
    description
        Label of the napari progress bar.
    """

    def __init__(
        self,
        make_job: Callable[[], Any],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        description: str = "napari-emseg",
    ) -> None:
        self.token = CancelToken()
        self._on_progress = on_progress
        self._on_done = on_done
        self._on_finish = on_finish
        self._bar = napari_progress(total=0, desc=description)
        self.error: BaseException | None = None
        self.result: Any = None
        self.running = False

        def work():
            return (yield from cancellable(make_job(), self.token))

        self.worker = GeneratorWorker(work)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)

    def start(self) -> JobRunner:
        self.running = True
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop at its next step; it returns what it has (if it can)."""
        self.token.cancel()
        self._bar.set_description("cancelling")

    # -- slots (UI thread) ---------------------------------------------------------------------
    def _yielded(self, event: Any) -> None:
        if not isinstance(event, Progress):
            return
        if event.total and self._bar.total != event.total:
            self._bar.total = event.total
        self._bar.set_description(event.describe()[:80])
        self._bar.n = event.step
        self._bar.refresh()
        if self._on_progress is not None:
            self._on_progress(event)

    def _returned(self, result: Any) -> None:
        self.result = result
        if self._on_done is not None:
            try:
                self._on_done(result)
            except Exception as err:  # a bug in a result handler must not vanish silently
                logger.exception("showing the result failed")
                show_error(f"napari-emseg: showing the result failed: {err}")

    def _errored(self, err: BaseException) -> None:
        self.error = err
        if isinstance(err, Cancelled):
            show_info("napari-emseg: cancelled")
        elif isinstance(err, EmsegError):
            show_error(f"napari-emseg: {err}")
        else:
            logger.error("job failed", exc_info=(type(err), err, err.__traceback__))
            show_error(f"napari-emseg: {type(err).__name__}: {err}")

    def _finished(self) -> None:
        self.running = False
        self._bar.close()
        if self._on_finish is not None:
            self._on_finish()

"""What the screenshot scripts share: napari with the synthetic sample, and waiting on its events."""

from __future__ import annotations

import time
from pathlib import Path


def sample_viewer(out_dir: str):
    """``(viewer, app, out)``: a 1500 x 950 napari window showing the synthetic sample; ``out`` exists."""
    import napari
    from qtpy.QtWidgets import QApplication

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-emseg", "synthetic_em")
    return viewer, QApplication.instance(), out


def pump(app, seconds: float) -> None:
    """Let Qt run for ``seconds``."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.05)


def wait(app, runner, timeout: float = 1800) -> None:
    """Let Qt run until ``runner`` (a widget's job runner) is done, then a little more."""
    t0 = time.time()
    while runner is not None and runner.running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()

"""The Suggest panel's regions: computed by suggest_job, drawn as rectangles, listed, and jumped to."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.qt


def test_suggest_regions_draws_rectangles_and_jumps(make_napari_viewer, qtbot, monkeypatch):
    import napari_emseg.models.checkpoint as checkpoint
    from napari_emseg._qt.suggest_panel import SuggestPanel

    from ..test_active import Steep, checkerboard

    monkeypatch.setattr(checkpoint, "load_model", lambda path: Steep())
    viewer = make_napari_viewer()
    img = checkerboard((8, 256, 256))
    img[5, 128:256, 0:128] = 128  # the model is unsure here only ...
    img[2, 0:128, 128:256] = 128  # ... and here
    raw = viewer.add_image(img, name="raw", scale=(2.0, 1.0, 1.0))
    labels = np.zeros(img.shape, np.uint32)
    labels[0] = 1  # painted slice 0 (dense): never suggested
    labels[0, :8, :8] = 2
    painted = viewer.add_labels(labels, name="painted", scale=(2.0, 1.0, 1.0))
    panel = SuggestPanel(viewer, lambda: ("m.safetensors", raw, painted))
    runner = panel.suggest(n=2, regions=True)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    boxes = sorted(s.box for s in panel.result.suggestions)
    assert boxes == [((2, 3), (0, 128), (128, 256)), ((5, 6), (128, 256), (0, 128))]
    shapes = viewer.layers["next regions"]
    assert len(shapes.data) == 2 and tuple(shapes.scale) == (2.0, 1.0, 1.0)
    corners = sorted(tuple(int(v) for v in d.min(axis=0)) for d in shapes.data)
    assert corners == [(2, 0, 128), (5, 128, 0)]
    assert panel.list.count() == 2 and panel.button.isEnabled() and panel.region_button.isEnabled()
    panel.jump_to(panel.result.suggestions[0])
    assert viewer.dims.point[0] == pytest.approx(2.0 * panel.result.suggestions[0].index)
    runner = panel.suggest(n=1, regions=True)  # asked again: the layer is replaced, not stacked
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert len(viewer.layers["next regions"].data) == 1 and len(viewer.layers) == 3

"""The Fine-tune widget passes a layer's scale as the voxel size only when the user set one."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.qt


@pytest.mark.parametrize(("scale", "expected"), [(None, None), ((40.0, 8.0, 8.0), (40.0, 8.0, 8.0))])
def test_finetune_voxel_size_from_layer_scale(make_napari_viewer, qtbot, monkeypatch, tmp_path, scale, expected):
    """napari's default scale (1, 1, 1) says nothing about the voxels: a stack of unrelated
    micrographs opened without a scale must not be taken for an isotropic volume."""
    from napari_emseg._qt import finetune_widget as fw
    from napari_emseg.finetune import job

    monkeypatch.setenv("NAPARI_EMSEG_CACHE", str(tmp_path / "cache"))
    seen = {}

    def fake_fine_tune(encoder, image, labels, cfg, *, voxel_size=None, **kw):
        seen["voxel_size"] = voxel_size
        yield from ()

    monkeypatch.setattr(job, "fine_tune", fake_fine_tune)
    viewer = make_napari_viewer()
    kw = {} if scale is None else {"scale": scale}
    image = viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="raw", **kw)
    painted = np.zeros((3, 32, 32), np.uint32)
    painted[0, 8:16, 8:16] = 1
    labels = viewer.add_labels(painted, name="painted", **kw)
    w = fw.FineTuneWidget(viewer)
    w.image_combo.value, w.labels_combo.value = image, labels
    runner = w.start()
    assert runner is not None
    qtbot.waitUntil(lambda: "voxel_size" in seen, timeout=30_000)
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert seen["voxel_size"] == expected

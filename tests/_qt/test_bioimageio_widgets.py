"""The widgets take a bioimage.io package (``napari-emseg export-model``) wherever they take a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.qt


@pytest.fixture
def package(tmp_path, monkeypatch):
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint
    from napari_emseg.models.bioimageio import export_bioimageio

    monkeypatch.setenv("NAPARI_EMSEG_CACHE", str(tmp_path / "cache"))
    net = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                      head_info("bcd", tile=(4, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", net, card={"licence": "MIT", "name": "tiny-pkg"})
    return export_bioimageio(ckpt, tmp_path / "tiny.zip", torchscript=False)


def test_encoder_widget_loads_a_package(make_napari_viewer, package):
    from napari_emseg._qt.encoder_widget import EncoderWidget
    from napari_emseg._qt.session import session_for

    viewer = make_napari_viewer()
    w = EncoderWidget(viewer)
    w.load_path(package)
    assert session_for(viewer).encoder == str(package)
    assert "contour" in w.card.toPlainText() and "tiny-pkg" in w.card.toPlainText()


def test_segment_widget_runs_a_package(make_napari_viewer, qtbot, tiny_em, package):
    from napari_emseg._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(tiny_em.raw, name="raw")
    w = SegmentWidget(viewer)
    w.image_combo.value = viewer.layers["raw"]
    w.model_edit.setText(str(package))
    runner = w.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
    assert runner.error is None, runner.error
    assert w.segmentation is not None and np.asarray(w.segmentation.predictions).shape[0] == 3

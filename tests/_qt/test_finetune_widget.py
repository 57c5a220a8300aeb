"""Encoder and Fine-tune widgets in a real viewer: choices, a short fine-tune, Cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.qt


@pytest.fixture
def viewer_with_sample(make_napari_viewer, tiny_em):
    viewer = make_napari_viewer()
    viewer.add_image(tiny_em.raw, name="raw", scale=tiny_em.voxel_size)
    painted = np.zeros_like(tiny_em.mitochondria)
    for z in (3, 8):
        painted[z] = tiny_em.mitochondria[z]
    viewer.add_labels(painted, name="painted", scale=tiny_em.voxel_size)
    return viewer


@pytest.fixture
def finetune_widget(viewer_with_sample, tmp_path, monkeypatch, tiny_bcd_checkpoint):
    """A Fine-tune widget on the sample's layers, a tiny checkpoint as encoder, the cache in ``tmp_path``."""
    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.session import session_for

    monkeypatch.setenv("NAPARI_EMSEG_CACHE", str(tmp_path / "cache"))
    viewer = viewer_with_sample
    session_for(viewer).set_encoder(str(tiny_bcd_checkpoint(tmp_path / "tiny-bcd.safetensors")))
    w = FineTuneWidget(viewer)
    w.image_combo.value = viewer.layers["raw"]
    w.labels_combo.value = viewer.layers["painted"]
    return w


def test_encoder_widget_lists_catalogue_and_device(make_napari_viewer, tmp_path, tiny_bcd_checkpoint):
    from napari_emseg._qt.encoder_widget import EncoderWidget
    from napari_emseg._qt.session import session_for

    viewer = make_napari_viewer()
    w = EncoderWidget(viewer)
    assert w.list.count() >= 6
    assert session_for(viewer).encoder == "auto"  # the default: chosen from the data
    assert "2D U-Net" in w.card.toPlainText()
    assert "CPU" in w.device_label.text() or "CUDA" in w.device_label.text()
    w.select("scratch-resunet")
    assert session_for(viewer).encoder == "scratch-resunet"
    assert "random initialisation" in w.card.toPlainText()
    path = tiny_bcd_checkpoint(tmp_path / "tiny-bcd.safetensors")
    w.load_path(path)
    assert session_for(viewer).encoder == str(path)
    assert "bcd" in w.card.toPlainText() or "contour" in w.card.toPlainText()


def test_finetune_flow_saves_model_and_previews(viewer_with_sample, finetune_widget, qtbot):
    from napari_emseg._qt.session import session_for

    viewer, w = viewer_with_sample, finetune_widget
    w.steps.setValue(6)
    runner = w.start()
    assert runner is not None
    qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
    assert runner.error is None, runner.error
    assert w.result.checkpoint.exists()
    assert session_for(viewer).model_path == w.result.checkpoint
    assert any(layer.name.startswith("preview") for layer in viewer.layers)
    assert w.curve.series["loss"]


def test_cancel_stops_within_a_step_and_keeps_the_model(finetune_widget, qtbot):
    w = finetune_widget
    w.steps.setValue(100_000)
    runner = w.start()
    qtbot.waitUntil(lambda: bool(w.curve.series.get("loss")), timeout=120_000)
    w.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert w.result is not None and w.result.stopped == "cancelled"
    assert w.result.steps < 100
    assert w.result.checkpoint.exists()


def test_wrong_layer_choices_are_explained(make_napari_viewer, monkeypatch):
    from napari_emseg._qt import finetune_widget as fw

    messages = []
    monkeypatch.setattr(fw, "show_warning", messages.append)
    viewer = make_napari_viewer()
    w = fw.FineTuneWidget(viewer)
    assert w.start() is None and "choose an image" in messages[-1]
    viewer.add_image(np.zeros((4, 16, 16), np.uint8), name="raw")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint32), name="small")
    w.image_combo.value = viewer.layers["raw"]
    w.labels_combo.value = viewer.layers["small"]
    assert w.start() is None and "does not match" in messages[-1]
    layer = w.create_labels_layer()
    assert layer.data.shape == (4, 16, 16)


def test_gray_micrograph_stored_as_rgb_gets_a_gray_layer_colour_is_refused(make_napari_viewer, monkeypatch):
    """napari opens a gray PNG/JPEG micrograph as RGB: the widgets work on a gray copy of it;
    a real colour image is refused with a way out."""
    from napari_emseg._qt import layers as ql
    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.segment_widget import SegmentWidget

    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", messages.append)
    viewer = make_napari_viewer()
    gray = np.random.default_rng(0).integers(0, 255, (32, 40), dtype=np.uint8)
    viewer.add_image(np.stack([gray] * 3, -1), name="tem", rgb=True, scale=(5.0, 5.0))
    w = FineTuneWidget(viewer)
    w.image_combo.value = viewer.layers["tem"]
    layer = w.create_labels_layer()
    assert layer.data.shape == (1, 32, 40)  # painted on the image, not on its colour samples
    copy = viewer.layers["tem (gray)"]
    assert not copy.rgb and copy.data.shape == (32, 40) and (copy.data == gray).all()
    assert tuple(copy.scale) == (5.0, 5.0) and w.image_combo.value is copy
    assert ql.grayscale_layer(viewer, viewer.layers["tem"]) is copy  # added once
    colour = np.stack([gray, gray // 2, gray], -1)
    viewer.add_image(colour, name="stained", rgb=True)
    s = SegmentWidget(viewer)
    s.image_combo.value = viewer.layers["stained"]
    assert s.start() is None and "channels differ" in messages[-1] and "Split RGB" in messages[-1]
    assert "stained (gray)" not in viewer.layers


def test_live_mode_follows_paint_and_view_never_blocks_and_stop_saves(viewer_with_sample, finetune_widget, qtbot,
                                                                       tiny_em):
    import time

    from qtpy.QtCore import QTimer

    from napari_emseg._qt.session import session_for
    from napari_emseg.finetune.live import LiveConfig
    from napari_emseg.models.checkpoint import load_checkpoint

    viewer, w = viewer_with_sample, finetune_widget
    vz = tiny_em.voxel_size[0]
    painted = viewer.layers["painted"]  # slices 3 and 8 painted
    w.live_config = LiveConfig(reread_every=1, refresh_s=0, calibrate_every_s=0, calibrate_on_stop=False,
                               validate_every=2)
    viewer.dims.set_point(0, 3 * vz)
    ticks: list[float] = []
    timer = QTimer()
    def tick():
        if w.runner is not None and w.runner.running and w.runner.result is None:  # not while showing the result
            ticks.append(time.perf_counter())

    timer.timeout.connect(tick)
    timer.start(20)
    viewer.layers.selection.active = painted

    w.live_button.setChecked(True)
    runner = w.runner
    assert runner is not None and not w.start_button.isEnabled()

    def preview_at(z):
        layer = viewer.layers["live prediction"]
        return layer.data.shape[-1] > 1 and np.isclose(layer.translate[0], z * vz)

    assert "live prediction" in viewer.layers and "live labels" in viewer.layers  # made on the click
    qtbot.waitUntil(lambda: preview_at(3), timeout=120_000)
    assert viewer.layers.selection.active is painted  # the preview layers did not take the brush
    painted.data[5] = tiny_em.mitochondria[5]  # a new painted slice ...
    viewer.dims.set_point(0, 5 * vz)  # ... and the view moves there: so does the preview
    qtbot.waitUntil(lambda: preview_at(5), timeout=120_000)
    n = len(w.curve.series["loss"])
    qtbot.waitUntil(lambda: len(w.curve.series["loss"]) >= n + 2, timeout=120_000)
    painted.data[3] = 0  # erased
    n = len(w.curve.series["loss"])
    qtbot.waitUntil(lambda: len(w.curve.series["loss"]) >= n + 2, timeout=120_000)
    w.live_button.setChecked(False)  # Stop
    qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
    timer.stop()
    assert runner.error is None, runner.error
    assert not w.live_button.isChecked() and w.start_button.isEnabled()
    assert w.result.checkpoint.exists() and session_for(viewer).model_path == w.result.checkpoint
    history = load_checkpoint(w.result.checkpoint, tensors=False).card["live"]["history"]
    changes = [(h["added"], h["erased"]) for h in history if h["event"] == "labels"]
    assert changes == [([3, 8], []), ([5], []), ([], [3])]
    assert len(ticks) >= 3
    gaps = np.diff(ticks)
    assert gaps.max() < 1.5, f"UI blocked for {gaps.max():.2f} s"

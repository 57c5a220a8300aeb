"""One-click presets run what ``segment --preset`` runs; the device is a real choice shared by the widgets."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.qt


def _cli_config(name: str, *options: str):
    """The SegmentConfig ``napari-emseg segment --preset NAME OPTIONS`` runs (post-processing included)."""
    from napari_emseg.cli import cmd_segment
    from napari_emseg.cli.main import build_parser
    from napari_emseg.models.checkpoint import load_checkpoint
    from napari_emseg.presets import preset_model_path

    args = build_parser().parse_args(["segment", "--image", "raw.zarr", "--out", "seg.zarr", "--preset", name,
                                      *options])
    target = load_checkpoint(preset_model_path(name), tensors=False).info.target
    return cmd_segment.segment_config(args, target)


def _gui_config(widget, name: str, monkeypatch, qtbot):
    """The SegmentConfig the one-click button hands to ``segment_job`` (caught before any work)."""
    import napari_emseg.workflows as workflows
    from napari_emseg.presets import preset_model_path
    from napari_emseg.progress import Cancelled

    seen = []

    def fake_segment_job(model, data, cfg, **kwargs):
        seen.append((model, cfg))
        raise Cancelled()
        yield  # a generator, like the real job

    monkeypatch.setattr(workflows, "segment_job", fake_segment_job)
    runner = widget.start(preset=name)
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert len(seen) == 1 and seen[0][0] == preset_model_path(name)
    return seen[0][1]


@pytest.mark.parametrize("name", ["mitochondria", "neurons"])
def test_one_click_runs_the_cli_preset_config(name, make_napari_viewer, qtbot, monkeypatch):
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg.presets import PRESETS, preset_config

    assert set(PRESETS) == {"mitochondria", "neurons"}  # every preset is parametrized here
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="raw")
    w = SegmentWidget(viewer)
    w.image_combo.value = viewer.layers["raw"]
    # thresholds set by hand before the click do not leak into the preset (they used to)
    w.min_size.setValue(7)
    w.threshold.setValue(0.05)
    w.seed_fg.setValue(0.05)
    gui = _gui_config(w, name, monkeypatch, qtbot)
    assert gui == _cli_config(name) == w.preset_config(name)
    section = "neurons" if name == "neurons" else "mitochondria"
    assert getattr(gui, section) == getattr(preset_config(name), section)
    assert w.min_size.value() == getattr(gui, section).min_size  # the controls show the preset's values
    # the Advanced box and the device are the CLI's --tile/--batch/--tta/--device
    w.tta.setChecked(True)
    w.batch.setValue(3)
    w.tile.setText("8,64,64")
    w.device.choose("cpu")
    gui = _gui_config(w, name, monkeypatch, qtbot)
    assert gui == _cli_config(name, "--tta", "--batch", "3", "--tile", "8,64,64", "--device", "cpu")
    assert gui.inference.device == "cpu" and gui.inference.tta


def _fake_machine(monkeypatch):
    """Two CUDA GPUs and Apple MPS, as torch would describe them (no GPU needed for the test)."""
    import napari_emseg.device as device

    gpus = [{"index": i, "name": f"GPU {i}", "memory_gb": 80.0} for i in (0, 1)]
    monkeypatch.setattr(device, "device_summary", lambda: {
        "torch": "2.x", "cuda_available": True, "gpus": gpus, "mps_available": True, "device": "cuda"})


def test_device_choice_is_shared_and_reaches_finetune_and_segment(make_napari_viewer, qtbot, monkeypatch):
    from napari_emseg._qt.encoder_widget import EncoderWidget
    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg._qt.session import session_for

    _fake_machine(monkeypatch)
    viewer = make_napari_viewer()
    enc, tune, seg = EncoderWidget(viewer), FineTuneWidget(viewer), SegmentWidget(viewer)
    for w in (enc, tune, seg):
        assert w.device.values() == ["auto", "cpu", "cuda:0", "cuda:1", "mps"]
        assert w.device.currentData() == "auto"
    assert "auto (cuda)" in enc.device.currentText()
    assert tune.config().device == "auto" and seg.config().inference.device == "auto"

    enc.device.choose("cuda:1")  # chosen in one widget, shown in all, used by both jobs
    assert session_for(viewer).device == "cuda:1"
    assert tune.device.currentData() == seg.device.currentData() == "cuda:1"
    assert tune.config().device == "cuda:1"
    assert seg.config().inference.device == "cuda:1"
    assert seg.preset_config("neurons").inference.device == "cuda:1"

    seg.device.setCurrentIndex(seg.device.findData("mps"))  # as a click in the menu does
    assert enc.device.currentData() == "mps" and tune.config().device == "mps"
    with pytest.raises(KeyError, match="cuda:7"):
        seg.device.choose("cuda:7")

    # "where to paint next" (the Fine-tune widget's panel) predicts on the chosen device too
    import napari_emseg.active as active
    import napari_emseg.models.checkpoint as checkpoint
    from napari_emseg._qt.suggest_panel import SuggestPanel
    from napari_emseg.progress import Cancelled

    seen = []

    def fake_suggest_job(model, image, labels, *, config, **kwargs):
        seen.append(config)
        raise Cancelled()
        yield

    monkeypatch.setattr(active, "suggest_job", fake_suggest_job)
    monkeypatch.setattr(checkpoint, "load_model", lambda path: None)
    raw = viewer.add_image(np.zeros((4, 32, 32), np.float32), name="raw")
    painted = viewer.add_labels(np.zeros((4, 32, 32), np.uint32), name="painted")
    runner = SuggestPanel(viewer, lambda: ("m.safetensors", raw, painted)).suggest()
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert seen and seen[0].inference.device == "mps"


def test_device_choices_describe_this_machine():
    import torch

    from napari_emseg.device import device_choices, select_device

    values = [v for v, _ in device_choices()]
    assert values[:2] == ["auto", "cpu"]
    assert [v for v in values if v.startswith("cuda:")] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert ("mps" in values) == bool(torch.backends.mps.is_available())
    for value in values:  # every choice is a device the jobs accept
        assert select_device(value).type in ("cpu", "cuda", "mps")

"""The full flow in a viewer: annotate -> fine-tune -> segment, re-run, export; UI stays responsive."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.qt


def test_annotate_finetune_segment_flow(make_napari_viewer, qtbot, tiny_em, tmp_path, monkeypatch,
                                        tiny_bcd_checkpoint):
    from qtpy.QtCore import QTimer

    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg._qt.session import session_for

    monkeypatch.setenv("NAPARI_EMSEG_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.add_image(tiny_em.raw, name="raw", scale=tiny_em.voxel_size)
    tune = FineTuneWidget(viewer)
    tune.image_combo.value = viewer.layers["raw"]
    painted = tune.create_labels_layer()  # annotate: paint two slices
    for z in (3, 8):
        painted.data[z] = tiny_em.mitochondria[z]
    tune.labels_combo.value = painted
    tune.steps.setValue(8)
    session_for(viewer).set_encoder(str(tiny_bcd_checkpoint(tmp_path / "tiny-bcd.safetensors")))

    # measure the largest gap between timer ticks while jobs run: the UI thread must stay free
    # (only while a job computes: showing its result adds layers, which is UI work by nature)
    ticks: dict[int, list[float]] = {}
    current = {}

    def tick():
        r = current.get("runner")
        if r is not None and r.running and r.result is None:
            ticks.setdefault(id(r), []).append(time.perf_counter())

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    runner = current["runner"] = tune.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)
    assert runner.error is None

    seg = SegmentWidget(viewer)
    assert seg.model_edit.text() == str(tune.result.checkpoint)  # the fine-tuned model is active
    seg.image_combo.value = viewer.layers["raw"]
    seg.min_size.setValue(0)
    seg.seed_fg.setValue(0.0)
    seg.seed_contour.setValue(1.0)
    seg.fg_threshold.setValue(0.0)
    runner = current["runner"] = seg.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)
    timer.stop()
    assert runner.error is None, runner.error
    labels = viewer.layers["raw mitochondria"]
    assert labels.data.shape == tiny_em.raw.shape and tuple(labels.scale) == tiny_em.voxel_size
    assert "raw foreground" in viewer.layers
    assert len(ticks) == 2 and all(len(t) >= 3 for t in ticks.values())  # both jobs were watched
    gaps = np.concatenate([np.diff(t) for t in ticks.values()])
    assert gaps.max() < 1.5, f"UI blocked for {gaps.max():.2f} s"

    # re-run post-processing with a size filter that removes everything: no re-prediction
    seg.min_size.setValue(10**9)
    runner = seg.rerun_postprocess()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert viewer.layers["raw mitochondria"].data.max() == 0

    assert "model" in seg.show_voxel_sizes() and "image" in seg.voxel_label.text()
    seg.min_size.setValue(0)
    runner = seg.rerun_postprocess()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    if viewer.layers["raw mitochondria"].data.max() > 0:  # measure the objects, click one
        runner = seg.measure.measure()
        qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
        ids = np.unique(viewer.layers["raw mitochondria"].data)
        assert seg.measure.table.rowCount() == np.count_nonzero(ids)
        assert "volume_um3" in viewer.layers["raw mitochondria"].features
        seg.measure.centre_on_row(0)
        assert viewer.layers["raw mitochondria"].selected_label == int(seg.measure.table.item(0, 0).text())

    # tune the thresholds on the painted slices; the tuned labels replace the layer
    seg.painted_combo.value = painted
    runner = seg.tune()
    qtbot.waitUntil(lambda: seg.tuned is not None and seg.runner is not runner and not seg.runner.running,
                    timeout=180_000)
    assert "tuned on the painted slices" in seg.status.text() or "objects" in seg.status.text()

    # where to paint next: ranked slices, never the painted ones; a click moves the viewer
    runner = tune.suggest.suggest(n=3)
    qtbot.waitUntil(lambda: not runner.running, timeout=180_000)
    assert runner.error is None, runner.error
    assert tune.suggest.list.count() == 3
    picked = tune.suggest.result.suggestions[0]
    assert picked.index not in (3, 8)
    tune.suggest.jump_to(picked)
    assert round(viewer.dims.point[0] / tiny_em.voxel_size[0]) == picked.index
    from napari_emseg._qt.session import viewer_camera

    centre = np.asarray(picked.center[1:]) * np.asarray(tiny_em.voxel_size[1:])
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], centre)  # the region is in view

    written = seg.export(tmp_path / "out.tif")
    assert written.endswith("out.tif")
    import json

    import tifffile
    import zarr

    with tifffile.TiffFile(written) as tif:
        made = json.loads(tif.imagej_metadata["Info"])["napari_emseg"]
    assert made["model"] == str(tune.result.checkpoint) and made["target"] == "bcd"
    assert made["postprocess"]["min_size"] == seg.min_size.value() and made["layer"] == "raw mitochondria"
    written = seg.export(tmp_path / "out.zarr")
    attrs = dict(zarr.open_array(written, mode="r").attrs)
    assert attrs["layer"] == "raw mitochondria" and attrs["postprocess"] == made["postprocess"]
    # the full provenance bundle: beside the file and in the zarr attributes
    from napari_emseg.provenance import read_bundle

    bundle = read_bundle(written)
    assert bundle == attrs["provenance"] and (tmp_path / "out.zarr.provenance.json").is_file()
    assert bundle["model"]["sha256"] and bundle["input"]["checksum"]["digest"]
    assert bundle["config"]["mitochondria"] == made["postprocess"]  # the settings that made the labels
    assert bundle["results"]["n_objects"] == int(viewer.layers["raw mitochondria"].data.max())
    assert (tmp_path / "out.tif.provenance.json").is_file()


def test_segment_errors_become_notifications(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_emseg._qt import _jobs
    from napari_emseg._qt import segment_widget as sw

    warnings, errors = [], []
    monkeypatch.setattr(sw, "show_warning", warnings.append)
    monkeypatch.setattr(_jobs, "show_error", errors.append)
    viewer = make_napari_viewer()
    w = sw.SegmentWidget(viewer)
    assert w.start() is None and "choose an image" in warnings[-1]
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="raw")
    w.image_combo.value = viewer.layers["raw"]
    assert w.start() is None and "no model yet" in warnings[-1]
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    w.model_edit.setText(str(bad))
    runner = w.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert errors and "broken.safetensors" in errors[-1]


def test_segment_uses_the_models_calibration_and_the_users_changes_win(make_napari_viewer, qtbot, tiny_em, tmp_path):
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg.models import ModelConfig, build_model, save_checkpoint
    from napari_emseg.models.heads import head_info
    from napari_emseg.postprocess import MitoConfig

    everything = MitoConfig(min_size=0, seed_foreground=0.0, seed_contour=1.0, seed_distance=0.0,
                            foreground_threshold=0.0)
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "calibrated.safetensors", model, card={"postprocess": {
        "target": "bcd", "config": everything.to_dict(), "source": "calibrated on painted slices",
        "metric": "ap", "score": 0.3, "default_score": 0.0, "objects": 9, "default_objects": 0}})
    viewer = make_napari_viewer()
    viewer.add_image(tiny_em.raw, name="raw")
    w = SegmentWidget(viewer)
    w.image_combo.value = viewer.layers["raw"]
    w.model_edit.setText(str(ckpt))
    runner = w.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
    assert runner.error is None, runner.error
    assert w._labels_postprocess == everything  # nothing set by hand: the calibrated settings
    assert w.seed_fg.value() == 0.0 and w.fg_threshold.value() == 0.0 and w.min_size.value() == 0  # shown
    assert w.segmentation.postprocess_source["source"] == "calibrated on painted slices"
    assert w.segmentation.provenance["postprocess_source"] == w.segmentation.postprocess_source
    assert "calibrated on painted slices" in w.status.text()
    assert viewer.layers["raw mitochondria"].data.max() > 0
    # a control the user changes wins; the other fields keep their calibrated values
    w.min_size.setValue(10**9)
    runner = w.rerun_postprocess()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert w._labels_postprocess == everything.replace(min_size=10**9)
    assert viewer.layers["raw mitochondria"].data.max() == 0
    assert w.segmentation.postprocess_source == {"source": "user", "base": "calibrated on painted slices",
                                                 "overrides": [f"min_size={10**9}"]}
    written = w.export(tmp_path / "out.zarr")
    from napari_emseg.provenance import read_bundle

    bundle = read_bundle(written)
    assert bundle["postprocess_source"]["source"] == "user" and bundle["config"]["mitochondria"]["min_size"] == 10**9


def test_segment_widget_cuts_results_back_to_micrographs_of_different_sizes(make_napari_viewer, qtbot, tiny_em,
                                                                            tmp_path):
    """A folder of micrographs of different sizes, opened by the reader: labels only inside each."""
    import tifffile

    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg._reader import read_volumes
    from napari_emseg.models import ModelConfig, build_model, save_checkpoint
    from napari_emseg.models.heads import head_info
    from napari_emseg.postprocess import MitoConfig

    sizes = [(96, 64), (64, 96), (80, 80)]
    (tmp_path / "img").mkdir()
    for i, (h, w) in enumerate(sizes):
        tifffile.imwrite(tmp_path / "img" / f"m{i}.tif", np.asarray(tiny_em.raw)[2 + 3 * i, :h, :w])
    everything = MitoConfig(min_size=0, seed_foreground=0.0, seed_contour=1.0, seed_distance=0.0,
                            foreground_threshold=0.0)  # labels everywhere the network looks
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "all.safetensors", model, card={"postprocess": {
        "target": "bcd", "config": everything.to_dict(), "source": "calibrated on painted slices"}})
    viewer = make_napari_viewer()
    [(data, meta, _)] = read_volumes(str(tmp_path / "img"))
    layer = viewer.add_image(data, **meta)
    w = SegmentWidget(viewer)
    w.image_combo.value = layer
    w.model_edit.setText(str(ckpt))
    runner = w.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=120_000)
    assert runner.error is None, runner.error
    labels = np.asarray(viewer.layers["img mitochondria"].data)
    assert labels.shape == (3, 96, 96)
    for z, (h, w_) in enumerate(sizes):
        assert labels[z, :h, :w_].all() and not labels[z, h:].any() and not labels[z, :, w_:].any()

"""Proofreading in the Segment widget: clicks -> merge / split / delete / fill holes / undo, recorded for rerun."""

from __future__ import annotations

import numpy as np
import pytest

from ..test_proofread import BCD, contour_map, scene

pytestmark = pytest.mark.qt

VOXEL = (30.0, 8.0, 8.0)


def segmented_widget(make_napari_viewer, qtbot, monkeypatch):
    """A Segment widget that shows the scene's labels and maps, as after a real segmentation."""
    import napari_emseg.workflows as workflows
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg.progress import Progress
    from napari_emseg.provenance import FORMAT

    lab = scene()
    maps = contour_map(lab.shape, ridge_x=15)

    def fake_segment_job(model, data, cfg, **kwargs):
        yield Progress(1, 1, "segment", "done")
        return workflows.Segmentation(maps, lab.copy(), "bcd", BCD, (), VOXEL, provenance={"format": FORMAT})

    monkeypatch.setattr(workflows, "segment_job", fake_segment_job)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(lab.shape, np.float32), name="raw", scale=VOXEL)
    w = SegmentWidget(viewer)
    w.image_combo.value = viewer.layers["raw"]
    w.model_edit.setText("made-up.safetensors")
    runner = w.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert runner.error is None, runner.error
    return viewer, w, lab


def click(viewer, w, *voxels):
    w.proofread.pick()
    layer = viewer.layers["proofread points"]
    assert viewer.layers.selection.active is layer and layer.mode == "add"
    assert tuple(layer.scale) == VOXEL  # drawn over the labels
    for v in voxels:  # as a canvas click: the world position (nm) in the layer's data coordinates
        layer.add(layer.world_to_data(np.asarray(v, float) * np.asarray(VOXEL)))


def edit(qtbot, w, op):
    runner = w.proofread.run(op)
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert runner.error is None, runner.error
    m = w.measure.runner
    if m is not None:
        qtbot.waitUntil(lambda: not m.running and not w.measure.runner.running, timeout=30_000)


def test_merge_split_delete_fill_undo_in_the_segment_widget(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    from napari_emseg.provenance import read_bundle

    viewer, w, orig = segmented_widget(make_napari_viewer, qtbot, monkeypatch)
    labels = w.labels_layer
    runner = w.measure.measure()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert w.measure.table.rowCount() == 4

    click(viewer, w, (2, 14, 4), (2, 14, 12))  # two blocks
    edit(qtbot, w, "merge")
    assert set(np.unique(labels.data)) == {0, 1, 2, 4} and len(viewer.layers["proofread points"].data) == 0
    assert "merged [2, 3]" in w.proofread.status.text()
    assert w.measure.table.rowCount() == 3  # the table follows the edit
    assert int(w.measure.table_data["volume_voxels"][1]) == int(np.isin(orig, [2, 3]).sum())

    click(viewer, w, (2, 4, 3), (2, 4, 21))  # two seeds in the bar: cut along the contour map
    edit(qtbot, w, "split")
    assert (labels.data[1:5, 2:8, :15] == 1).all() and (labels.data[1:5, 2:8, 16:24] == 5).all()
    assert list(w.measure.table_data["label"]) == [1, 2, 4, 5]

    click(viewer, w, (0, 20, 28))
    edit(qtbot, w, "fill_holes")
    assert (labels.data[2:4, 23:25, 31:35] == 4).all()
    labels.selected_label = 4  # no clicks: the selected label
    edit(qtbot, w, "delete")
    assert not (labels.data == 4).any()
    log = w.segmentation.provenance["proofreading"]["edits"]
    assert [r["op"] for r in log] == ["merge", "split", "fill_holes", "delete"]

    w.proofread.undo()
    assert (labels.data[orig == 4] == 4).all() and (labels.data[2:4, 23:25, 31:35] == 4).all()
    assert len(w.segmentation.provenance["proofreading"]["edits"]) == 3
    m = w.measure.runner
    qtbot.waitUntil(lambda: not m.running and not w.measure.runner.running, timeout=30_000)
    assert list(w.measure.table_data["label"]) == [1, 2, 4, 5]

    written = w.export(tmp_path / "edited.zarr")
    bundle = read_bundle(written)
    assert [r["op"] for r in bundle["proofreading"]["edits"]] == ["merge", "split", "fill_holes"]
    assert bundle["results"]["n_objects"] == 5

    # new labels (post-processing re-run): the old edits no longer apply and leave the record
    w._show_labels(orig.copy(), "bcd", None)
    assert "proofreading" not in w.segmentation.provenance and w.proofread.editor is None


def test_proofread_asks_for_clicks_and_reports_bad_seeds(make_napari_viewer, qtbot, monkeypatch):
    from napari_emseg._qt import _jobs
    from napari_emseg._qt import proofread_panel as pp

    warnings, errors = [], []
    monkeypatch.setattr(pp, "show_warning", warnings.append)
    monkeypatch.setattr(_jobs, "show_error", errors.append)
    viewer, w, orig = segmented_widget(make_napari_viewer, qtbot, monkeypatch)
    assert w.proofread.run("merge") is None and "Click objects" in warnings[-1]
    click(viewer, w, (2, 4, 3), (2, 14, 4))  # seeds in two objects
    runner = w.proofread.run("split")
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert errors and "one object" in errors[-1]
    np.testing.assert_array_equal(w.labels_layer.data, orig)

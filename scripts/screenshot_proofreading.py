"""Render the proofreading screenshot of the Segment widget (docs/images/proofreading.png).

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_proofreading.py docs/images

Opens the synthetic sample, segments its neurons with the one-click preset, measures the
objects, merges the two objects that split one true cell most (the sample's ground truth says
which), then clicks one seed in each of the two cells that one object joins most, and saves the
window with the seeds (``proofreading.png``) and after the split (``proofreading_split.png``).
"""

from __future__ import annotations

import sys

import numpy as np


def overlaps(pred: np.ndarray, truth: np.ndarray) -> dict[tuple[int, int], int]:
    """Voxel counts of (predicted id, true id) pairs in a section."""
    keep = (pred > 0) & (truth > 0)
    pairs, counts = np.unique(np.stack([pred[keep], truth[keep]]), axis=1, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(pairs.T, counts)}


def false_split(pred: np.ndarray, truth: np.ndarray) -> list[int]:
    """Two predicted objects that share one true cell most evenly (what a merge fixes)."""
    best, pair = 0, []
    ov = overlaps(pred, truth)
    for t in {b for _, b in ov}:
        parts = sorted((n, a) for (a, b), n in ov.items() if b == t)
        if len(parts) >= 2 and parts[-2][0] > best:
            best, pair = parts[-2][0], [parts[-1][1], parts[-2][1]]
    return pair


def false_merge(pred: np.ndarray, truth: np.ndarray) -> tuple[int, list[int]]:
    """A predicted object covering two true cells, and the two cells (what a split fixes)."""
    best, found = 0, (0, [])
    ov = overlaps(pred, truth)
    for a in {a for a, _ in ov}:
        parts = sorted((n, b) for (p, b), n in ov.items() if p == a)
        if len(parts) >= 2 and parts[-2][0] > best:
            best, found = parts[-2][0], (a, [parts[-1][1], parts[-2][1]])
    return found


def inner_point(mask: np.ndarray) -> np.ndarray:
    """The voxel of a 2D mask farthest from its edge."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]  # the image's edge is an edge too
    return np.array(np.unravel_index(int(dist.argmax()), mask.shape))


def main(out_dir: str = "docs/images") -> int:
    from _viewer import sample_viewer, wait  # scripts/_viewer.py

    from napari_emseg._qt.segment_widget import SegmentWidget

    viewer, app, out = sample_viewer(out_dir)
    raw = viewer.layers["synthetic EM"]
    truth = np.asarray(viewer.layers["neurons (ground truth)"].data)
    z = 16
    viewer.dims.set_current_step(0, z)

    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg.image_combo.value = raw
    wait(app, seg.start(preset="neurons"))
    for layer in viewer.layers:
        layer.visible = layer is raw or layer is seg.labels_layer
    seg.measure.skeleton.setChecked(False)  # quick table
    wait(app, seg.measure.measure())
    labels = seg.labels_layer
    viewer.reset_view()
    section = np.asarray(labels.data[z])
    click = seg.proofread

    def put(points):
        click.pick()
        layer = viewer.layers["proofread points"]
        for p in points:
            layer.add(np.asarray([z, *p], float))

    a, b = false_split(section, truth[z])
    put([inner_point(section == a), inner_point(section == b)])
    wait(app, click.run("merge"))
    wait(app, seg.measure.runner)
    section = np.asarray(labels.data[z])
    big, cells = false_merge(section, truth[z])
    seeds = [inner_point((section == big) & (truth[z] == c)) for c in cells]
    put(seeds)
    from napari_emseg._qt.session import viewer_camera

    camera = viewer_camera(viewer)  # the object to split in the middle, larger
    camera.center = tuple(np.mean(seeds, axis=0) * np.asarray(labels.scale[-2:]))
    camera.zoom = camera.zoom * 1.8
    labels.selected_label = big
    labels.show_selected_label = False
    app.processEvents()
    viewer.screenshot(str(out / "proofreading.png"), canvas_only=False)
    print("wrote", out / "proofreading.png", f"(merged {a}+{b}; seeds in {big} on cells {cells})")
    wait(app, click.run("split"))
    wait(app, seg.measure.runner)
    viewer.screenshot(str(out / "proofreading_split.png"), canvas_only=False)
    print("wrote", out / "proofreading_split.png", click.status.text())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

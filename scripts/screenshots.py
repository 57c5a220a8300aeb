"""Render a screenshot of each napari-emseg dock widget beside the synthetic sample.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py docs/images

Opens napari with the sample, docks each widget, runs a short fine-tune and a segmentation so
the widgets show real state, and saves PNGs of the whole window (``viewer.screenshot(canvas_only=False)``).
"""

from __future__ import annotations

import os
import sys

import numpy as np


def main(out_dir: str = "docs/images") -> int:
    from _viewer import sample_viewer, wait  # scripts/_viewer.py

    from napari_emseg._qt.encoder_widget import EncoderWidget
    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.segment_widget import SegmentWidget
    from napari_emseg._qt.session import session_for
    from napari_emseg.cli.cmd_demo import default_encoder

    viewer, app, out = sample_viewer(out_dir)
    raw = viewer.layers["synthetic EM"]
    gt = viewer.layers["mitochondria (ground truth)"]
    gt.visible = False
    viewer.dims.set_current_step(0, 16)

    enc = EncoderWidget(viewer)
    enc_dock = viewer.window.add_dock_widget(enc, name="Encoder", area="right")
    enc.select(default_encoder())
    app.processEvents()
    viewer.screenshot(str(out / "encoder_widget.png"), canvas_only=False)
    print("wrote", out / "encoder_widget.png")

    tune = FineTuneWidget(viewer)
    tune_dock = viewer.window.add_dock_widget(tune, name="Fine-tune", area="right")
    tune.image_combo.value = raw
    painted = tune.create_labels_layer()
    for z in (8, 16, 24):
        painted.data[z] = np.asarray(gt.data[z])
    painted.refresh()
    tune.labels_combo.value = painted
    tune.steps.setValue(int(os.environ.get("SCREENSHOT_STEPS", "120")))
    session_for(viewer).set_encoder(default_encoder())
    runner = tune.start()
    wait(app, runner)
    viewer.screenshot(str(out / "finetune_widget.png"), canvas_only=False)
    print("wrote", out / "finetune_widget.png")

    # the Segment widget alone, so the window keeps its size
    for dock in (enc_dock, tune_dock):
        viewer.window.remove_dock_widget(dock)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg.image_combo.value = raw
    runner = seg.start()
    wait(app, runner)
    # tune the thresholds on the painted slices, as a user would; it re-runs post-processing
    seg.painted_combo.value = painted
    runner = seg.tune()
    wait(app, runner)
    if seg.runner is not runner:
        wait(app, seg.runner)
    for layer in viewer.layers:
        layer.visible = layer is raw or layer is seg.labels_layer
    viewer.dims.set_current_step(0, 12)  # an unpainted slice
    app.processEvents()
    viewer.screenshot(str(out / "segment_widget.png"), canvas_only=False)
    print("wrote", out / "segment_widget.png", f"({int(seg.labels_layer.data.max())} objects)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

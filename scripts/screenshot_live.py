"""Render the screenshots of live fine-tuning (docs/images/live_*.png).

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_live.py docs/images

Opens the synthetic sample, docks the Fine-tune widget, paints the mitochondria of one slice
from the sample's ground truth and presses **Live**. Saved, whole window each time:

1. ``live_1_first_slice.png``: the first previews of the painted slice (``LIVE_FIRST_S`` s of
   training, default 150);
2. ``live_2_new_slice.png``: a second slice painted and the view moved there; the preview of
   that slice after ``LIVE_SECOND_S`` s more (default 120);
3. ``live_3_stopped.png``: after Live is pressed again: the best model saved, the active model.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def main(out_dir: str = "docs/images") -> int:
    from _viewer import pump, sample_viewer  # scripts/_viewer.py

    from napari_emseg._qt.finetune_widget import FineTuneWidget
    from napari_emseg._qt.session import session_for
    from napari_emseg.cli.cmd_demo import default_encoder

    viewer, app, out = sample_viewer(out_dir)
    raw = viewer.layers["synthetic EM"]
    gt = viewer.layers["mitochondria (ground truth)"]
    for layer in viewer.layers:
        layer.visible = layer is raw
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(tune, name="Fine-tune", area="right")
    tune.image_combo.value = raw
    painted = tune.create_labels_layer()
    tune.labels_combo.value = painted
    session_for(viewer).set_encoder(default_encoder())
    first, second = 16, 24
    viewer.reset_view()
    viewer.dims.set_current_step(0, first)
    painted.data[first] = np.asarray(gt.data[first])
    painted.refresh()

    tune.live_button.setChecked(True)
    runner = tune.runner
    pump(app, float(os.environ.get("LIVE_FIRST_S", "150")))
    viewer.screenshot(str(out / "live_1_first_slice.png"), canvas_only=False)
    print("wrote", out / "live_1_first_slice.png", tune.status.text())

    painted.data[second] = np.asarray(gt.data[second])
    painted.refresh()
    viewer.dims.set_current_step(0, second)
    pump(app, float(os.environ.get("LIVE_SECOND_S", "120")))
    viewer.screenshot(str(out / "live_2_new_slice.png"), canvas_only=False)
    print("wrote", out / "live_2_new_slice.png", tune.status.text())

    tune.live_button.setChecked(False)
    while runner.running:
        pump(app, 0.2)
    pump(app, 1.0)
    viewer.screenshot(str(out / "live_3_stopped.png"), canvas_only=False)
    print("wrote", out / "live_3_stopped.png", tune.status.text())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

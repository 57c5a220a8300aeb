"""'Annotate here next': slices (or regions) ranked by the model's uncertainty; a click jumps there.

Suggested regions are also drawn as rectangles in a Shapes layer ("next regions") over the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from ._jobs import JobRunner
from .session import session_for, viewer_camera


class SuggestPanel(QWidget):
    """Asks :func:`napari_emseg.active.suggest_job` where to paint next, lists the answer."""

    def __init__(self, viewer: Any, get_inputs: Any, get_mode: Any = lambda: "dense") -> None:
        super().__init__()
        self.viewer = viewer
        self.get_inputs = get_inputs  # () -> (model checkpoint, image layer, labels layer)
        self.get_mode = get_mode  # () -> "dense" or "scribbles", as the labels are painted
        self.button = QPushButton("Suggest where to paint next")
        self.region_button = QPushButton("Suggest regions")
        self.region_button.setToolTip("128 x 128 windows across all slices to paint next (fill each with the "
                                       "background label and its objects, as scribbles)")
        self.list = QListWidget()
        self.list.setMaximumHeight(120)
        self.result: Any = None
        self.runner: JobRunner | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Next slices to paint (most uncertain first):"))
        layout.addWidget(self.button)
        layout.addWidget(self.region_button)
        layout.addWidget(self.list)
        self.button.clicked.connect(lambda: self.suggest())
        self.region_button.clicked.connect(lambda: self.suggest(regions=True))
        self.list.itemClicked.connect(self._jump)

    def suggest(self, n: int = 5, regions: bool = False) -> JobRunner | None:
        from ..active import suggest_job
        from ..models.checkpoint import load_model

        model_path, image, labels = self.get_inputs()
        if model_path is None or image is None or labels is None:
            show_warning("napari-emseg: fine-tune first; suggestions come from the model's uncertainty")
            return None
        data = image.data if image.ndim == 3 else np.asarray(image.data)[None]
        painted = np.asarray(labels.data) if labels.ndim == 3 else np.asarray(labels.data)[None]
        self._enable(False)

        from ..uncertainty import UncertaintyConfig

        base = UncertaintyConfig()  # on the device chosen for the viewer, as fine-tuning
        config = base.replace(inference=base.inference.replace(device=session_for(self.viewer).device))

        def job():
            return suggest_job(load_model(model_path), data, painted, n=n, config=config, mode=self.get_mode(),
                               method="regions" if regions else "uncertainty")

        def done(result: Any) -> None:
            self.result = result
            self.list.clear()
            for s in result.suggestions:
                item = QListWidgetItem(s.describe())
                item.setData(Qt.ItemDataRole.UserRole, s)
                self.list.addItem(item)
            if regions:
                self.show_regions(result.suggestions, image)

        self.runner = JobRunner(job, on_done=done, on_finish=lambda: self._enable(True),
                                description="uncertainty")
        return self.runner.start()

    def _enable(self, on: bool) -> None:
        self.button.setEnabled(on)
        self.region_button.setEnabled(on)

    def show_regions(self, suggestions: Any, image: Any) -> Any:
        """Rectangles of the suggested regions (z-slices) in the Shapes layer "next regions"."""
        rects = [np.array([[s.index, y, x] for y, x in ((y0, x0), (y0, x1), (y1, x1), (y1, x0))], float)
                 for s in suggestions for (y0, y1), (x0, x1) in [s.box[1:]] if s.axis == 0]
        scale = image.scale[-3:] if image is not None and image.ndim == 3 else (1, 1, 1)
        translate = image.translate[-3:] if image is not None and image.ndim == 3 else (0, 0, 0)
        if "next regions" in self.viewer.layers:
            self.viewer.layers.remove("next regions")
        return self.viewer.add_shapes(rects, shape_type="rectangle", name="next regions", edge_color="yellow",
                                      face_color="transparent", edge_width=2, scale=scale, translate=translate)

    def _jump(self, item: QListWidgetItem) -> None:
        self.jump_to(item.data(Qt.ItemDataRole.UserRole))

    def jump_to(self, suggestion: Any) -> None:
        """Show the suggested slice and centre its most uncertain region."""
        _, image, _ = self.get_inputs()
        scale = np.asarray(image.scale[-3:]) if image is not None and image.ndim == 3 else np.ones(3)
        translate = np.asarray(image.translate[-3:]) if image is not None and image.ndim == 3 else np.zeros(3)
        world = np.asarray(suggestion.center) * scale + translate
        axis = suggestion.axis
        self.viewer.dims.set_point(self.viewer.dims.ndim - 3 + axis, float(world[axis]))
        if axis == 0 and self.viewer.dims.ndisplay == 2:
            viewer_camera(self.viewer).center = tuple(world[1:])

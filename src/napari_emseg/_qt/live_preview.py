"""Live mode's napari side: tell the loop which slice is in view, show what it predicts there."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..finetune.live_feed import ViewSource
from .session import viewer_camera

MAPS, LABELS = "live prediction", "live labels"


class LivePreview:
    """Keeps a :class:`ViewSource` in step with the viewer and draws the loop's previews.

    The view is written on the UI thread (dims and camera events) and read by the worker; the
    previews arrive on the UI thread from the worker's yields.
    """

    def __init__(self, viewer: Any, image: Any) -> None:
        self.viewer, self.image = viewer, image
        self.view = ViewSource()
        self.update()
        # the layers are made now, on the click: adding a layer costs the UI thread a second on a
        # busy CPU, updating one a tenth of that, and previews then only update
        z, _ = self.view()
        placeholder = np.zeros((1, 1, 1) if image.ndim >= 3 else (1, 1), np.float32)
        self.show({"maps": placeholder[None], "labels": placeholder.astype(np.uint32), "z0": z, "offset": (0, 0),
                   "channel_names": ("",)}, fit=False)
        viewer.dims.events.current_step.connect(self.update)
        viewer_camera(viewer).events.center.connect(self.update)

    def close(self) -> None:
        """Stop following the viewer."""
        self.viewer.dims.events.current_step.disconnect(self.update)
        viewer_camera(self.viewer).events.center.disconnect(self.update)

    def update(self, *_: Any) -> None:
        image = self.image
        world = np.asarray(self.viewer.dims.point, float)
        world[-2:] = np.asarray(viewer_camera(self.viewer).center, float)[-2:]
        data = np.asarray(image.world_to_data(world), float)
        if image.ndim >= 3:
            nz = image.data.shape[-3]
            self.view.set(int(np.clip(round(data[-3]), 0, nz - 1)), (data[-2], data[-1]))
        else:
            self.view.set(0, (data[-2], data[-1]))

    def show(self, preview: dict, fit: bool = True) -> None:
        """Draw the first channel and the instance labels of the previewed slices over the image."""
        image = self.image
        maps, labels = preview["maps"][0], preview.get("labels")
        if image.ndim < 3 and fit:
            maps, labels = maps[0], (labels[0] if labels is not None else None)
        scale = np.asarray(image.scale, float)
        corner = np.array([preview["z0"], *preview["offset"]], float)
        if image.ndim >= 3:
            translate = corner * scale[-3:] + np.asarray(image.translate[-3:], float)
            scale = scale[-3:]
        else:
            translate = corner[1:] * scale[-2:] + np.asarray(image.translate[-2:], float)
            scale = scale[-2:]
        name = MAPS
        active = self.viewer.layers.selection.active  # new layers must not take the brush away
        self._put(name, maps, translate, scale, labels)
        if active is not None and self.viewer.layers.selection.active is not active:
            self.viewer.layers.selection.active = active

    def _put(self, name: str, maps: np.ndarray, translate: np.ndarray, scale: np.ndarray, labels: Any) -> None:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data, layer.translate = maps, translate
        else:
            self.viewer.add_image(maps, name=name, scale=scale, translate=translate, colormap="magma", opacity=0.5,
                                  blending="additive", contrast_limits=(0, 1))
        if labels is None:
            return
        labels = np.asarray(labels, np.uint32)
        if LABELS in self.viewer.layers:
            layer = self.viewer.layers[LABELS]
            layer.data, layer.translate = labels, translate
        else:
            layer = self.viewer.add_labels(labels, name=LABELS, scale=scale, translate=translate, opacity=0.4)
            layer.contour = 1

"""Fine-tune dock widget: paint slices, press Start, watch the loss and a live preview.

**Live** trains while you paint (:func:`napari_emseg.finetune.live.live_fine_tune`): the slice
in view is re-predicted every few seconds; pressing it again stops and keeps the best model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._jobs import JobRunner
from .device_choice import DeviceChoice
from .layers import chosen_grayscale, layer_voxel_size
from .plots import LossCurve
from .session import session_for
from .suggest_panel import SuggestPanel

logger = logging.getLogger(__name__)

TASKS = ("mitochondria", "neurons", "semantic")
PAINT_HINT = {
    "mitochondria": "Dense slices: paint every mitochondrion on 2-3 slices (each its own label).",
    "neurons": "Dense slices: paint every neuron on 2-3 slices, each its own label; membranes may stay 0.",
    "semantic": "Dense slices: paint each class with its value (0 = background) on 2-3 slices.",
}


class FineTuneWidget(QWidget):
    """Thin front end of :func:`napari_emseg.finetune.job.fine_tune`."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.runner: JobRunner | None = None
        self.result: Any = None

        self.image_combo: ComboBox = create_widget(annotation=Image, label="image")
        self.labels_combo: ComboBox = create_widget(annotation=Labels, label="labels")
        self.new_labels = QPushButton("New labels layer")
        self.task = QComboBox()
        self.task.addItems(TASKS)
        self.mode = QComboBox()
        self.mode.addItems(["dense slices", "scribbles"])
        self.steps = QSpinBox()
        self.steps.setRange(0, 1_000_000)
        self.steps.setSpecialValueText("auto")  # 0: the recipe's default (the text did not fit the box)
        self.steps.setToolTip("auto: train until the time limit; without one, 600 steps for a 2D network, "
                              "300 for a 3D one")
        self.steps.setValue(0)
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0, 10_000)
        self.minutes.setSpecialValueText("no limit")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.freeze = QCheckBox("freeze encoder")
        self.encoder_label = QLabel()
        self.device = DeviceChoice(self.session)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.live_button = QPushButton("Live")
        self.live_button.setCheckable(True)
        self.live_button.setToolTip("Train while you paint; the slice in view is re-predicted every few seconds. "
                                    "Press again to stop and keep the best model.")
        self.live_config: Any = None  # a LiveConfig; None: the automatic settings
        self.live: Any = None  # the LivePreview of a running live loop
        self.curve = LossCurve()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.suggest = SuggestPanel(napari_viewer, lambda: (
            self.result.checkpoint if self.result is not None else None,
            self.image_combo.value, self.labels_combo.value),
            lambda: "dense" if self.mode.currentIndex() == 0 else "scribbles")

        form = QFormLayout()
        form.addRow("image", self.image_combo.native)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels_combo.native, 1)
        labels_row.addWidget(self.new_labels)
        form.addRow("labels", labels_row)
        form.addRow("task", self.task)
        form.addRow("annotation", self.mode)
        form.addRow("steps", self.steps)
        form.addRow("time limit (min)", self.minutes)
        form.addRow("learning rate", self.lr)
        form.addRow("", self.freeze)
        form.addRow("encoder", self.encoder_label)
        form.addRow("device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.live_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addLayout(buttons)
        layout.addWidget(self.curve)
        layout.addWidget(self.status)
        layout.addWidget(self.suggest)
        layout.addStretch(1)

        for combo in (self.image_combo, self.labels_combo):
            combo.reset_choices()
        napari_viewer.layers.events.inserted.connect(self._reset_choices)
        napari_viewer.layers.events.removed.connect(self._reset_choices)
        self.new_labels.clicked.connect(self.create_labels_layer)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.live_button.toggled.connect(self._live_toggled)
        self.task.currentTextChanged.connect(self._show_hint)
        self.session.encoder_changed.connect(self._show_encoder)
        self._show_hint(self.task.currentText())
        self._show_encoder(self.session.encoder)

    # -- controls --------------------------------------------------------------------------------
    def _reset_choices(self, *_: Any) -> None:
        self.image_combo.reset_choices()
        self.labels_combo.reset_choices()

    def _show_hint(self, task: str) -> None:
        self.hint.setText(PAINT_HINT.get(task, ""))

    def _show_encoder(self, name: str) -> None:
        self.encoder_label.setText(Path(name).name if name else "-")

    def create_labels_layer(self) -> Labels | None:
        """A new Labels layer of the image's shape and scale, selected for painting."""
        if self.image_combo.value is None:
            show_warning("napari-emseg: add or open an image first")
            return None
        image = chosen_grayscale(self.viewer, self.image_combo)
        if image is None:
            return None
        shape = tuple(image.data.shape[-3:]) if image.ndim >= 3 else (1, *image.data.shape)
        layer = self.viewer.add_labels(np.zeros(shape, np.uint32), name=f"paint {self.task.currentText()}",
                                       scale=image.scale[-3:], translate=image.translate[-3:])
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        self.labels_combo.value = layer
        return layer

    def config(self):
        """The :class:`FineTuneConfig` the controls describe."""
        from ..finetune.job import FineTuneConfig

        return FineTuneConfig(
            task=self.task.currentText(),
            mode="dense" if self.mode.currentIndex() == 0 else "scribbles",
            steps=self.steps.value() or None,
            time_limit_min=self.minutes.value() or None,
            lr=self.lr.value(),
            freeze="encoder" if self.freeze.isChecked() else "none",
            preview_every=max(5, min(50, (self.steps.value() or 300) // 10)),
            preview_z=self._current_z(),
            device=self.session.device,
        )

    def _current_z(self) -> int | None:
        image = self.image_combo.value
        if image is None:
            return None
        z = image.world_to_data(self.viewer.dims.point)[-3] if image.ndim >= 3 else 0
        return int(np.clip(round(z), 0, image.data.shape[-3] - 1)) if image.ndim >= 3 else 0

    # -- running ---------------------------------------------------------------------------------
    def _checked_layers(self) -> tuple[Image, Labels] | None:
        image, labels = self.image_combo.value, self.labels_combo.value
        if image is None or labels is None:
            show_warning("napari-emseg: choose an image layer and a Labels layer (New labels layer makes one)")
            return None
        image = chosen_grayscale(self.viewer, self.image_combo)
        if image is None:
            return None
        if image.ndim not in (2, 3):
            show_warning(f"napari-emseg: '{image.name}' is not a grayscale 2D/3D image")
            return None
        if tuple(labels.data.shape) != tuple(image.data.shape):
            show_warning(f"napari-emseg: '{labels.name}' {tuple(labels.data.shape)} does not match "
                         f"'{image.name}' {tuple(image.data.shape)}: paint in a Labels layer of the image's shape")
            return None
        return image, labels

    def start(self) -> JobRunner | None:
        """Check the layer choices, then fine-tune in a worker thread."""
        from ..finetune.job import fine_tune
        from ..models.registry import cache_dir

        layers = self._checked_layers()
        if layers is None:
            return None
        image, labels = layers
        cfg = self.config()
        out = cache_dir() / "finetuned" / f"{image.name}-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
        img_data, lab_data = image.data, np.asarray(labels.data)
        if image.ndim == 2:
            img_data, lab_data = np.asarray(img_data)[None], lab_data[None]
        scale = layer_voxel_size(image)  # None for napari's default scale: the data decide
        encoder = self.session.encoder
        self.curve.clear()
        self._set_running(True)
        self.status.setText(f"fine-tuning {cfg.task} from {Path(encoder).name} ...")

        def make_job():
            return fine_tune(encoder, img_data, lab_data, cfg, out=out, voxel_size=scale,
                             source=f"napari layer '{image.name}'")

        self.runner = JobRunner(make_job, on_progress=self._progress, on_done=self._done,
                                on_finish=lambda: self._set_running(False), description="fine-tune")
        return self.runner.start()

    def start_live(self) -> JobRunner | None:
        """Train while the user paints (Live): re-read the labels, preview the slice in view."""
        from ..finetune.live import LiveConfig, live_fine_tune
        from ..models.registry import cache_dir
        from .live_preview import LivePreview

        layers = self._checked_layers()
        if layers is None or (self.runner is not None and self.runner.running):
            self._uncheck_live()
            return None
        image, labels = layers
        cfg = self.config().replace(preview_every=0)
        live = self.live_config or LiveConfig()
        out = cache_dir() / "finetuned" / f"{image.name}-{cfg.task}-live-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
        img_data = image.data if image.ndim == 3 else np.asarray(image.data)[None]
        scale = layer_voxel_size(image)  # None for napari's default scale: the data decide
        encoder = self.session.encoder
        self.live = preview = LivePreview(self.viewer, image)
        self.curve.clear()
        self._set_running(True)
        self.status.setText(f"live: training {cfg.task} from {Path(encoder).name} while you paint ...")

        def make_job():
            return live_fine_tune(encoder, img_data, lambda: labels.data, cfg, live, view=preview.view, out=out,
                                  voxel_size=scale, source=f"napari layer '{image.name}' (live)")

        def finish():
            preview.close()
            self._set_running(False)
            self._uncheck_live()

        self.runner = JobRunner(make_job, on_progress=self._progress, on_done=self._done, on_finish=finish,
                                description="live fine-tune")
        return self.runner.start()

    def stop_live(self) -> None:
        """Stop the live loop: it keeps the best model, calibrates and saves it."""
        if self.runner is not None and self.runner.running:
            self.runner.cancel()
            self.status.setText("stopping live: keeping the best model, calibrating ...")

    def _live_toggled(self, on: bool) -> None:
        if on:
            self.start_live()
        else:
            self.stop_live()

    def _uncheck_live(self) -> None:
        self.live_button.blockSignals(True)
        self.live_button.setChecked(False)
        self.live_button.blockSignals(False)

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
            self.status.setText("cancelling: keeping the best model so far ...")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.live_button.setEnabled(not running or self.live_button.isChecked())

    def _progress(self, event: Any) -> None:
        if self.runner is not None and self.runner.result is not None:
            return  # a late event must not overwrite the result's status line
        for key in ("loss", "val_loss"):
            if key in event.metrics:
                self.curve.add(key, event.step, event.metrics[key])
        if event.stage in ("fine-tune", "live", "waiting", "calibrate"):
            self.status.setText(event.describe())
        if event.preview is not None and "z0" in event.preview and self.live is not None:
            self.live.show(event.preview)
        elif event.preview is not None:
            self._show_preview(event.preview)

    def _show_preview(self, preview: dict) -> None:
        image = self.image_combo.value
        maps = preview["maps"][0][None]  # first channel: foreground / boundary / class 0
        scale = image.scale[-3:] if image is not None and image.ndim >= 3 else (1, 1, 1)
        translate = np.array([preview["z"], *preview["offset"]]) * np.asarray(scale)
        if image is not None and image.ndim >= 3:
            translate = translate + np.asarray(image.translate[-3:])
        name = f"preview ({preview['channel_names'][0]})"
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data, layer.translate = maps, translate
        else:
            self.viewer.add_image(maps, name=name, scale=scale, translate=translate, colormap="magma",
                                  opacity=0.5, blending="additive", contrast_limits=(0, 1))

    def _done(self, result: Any) -> None:
        self.result = result
        self.session.set_model(result.checkpoint)
        note = " (cancelled: best model so far)" if result.stopped == "cancelled" else ""
        if getattr(result, "live_history", None) is not None:
            note = " (live: best model since the labels last changed)"
        self.status.setText(f"saved {result.checkpoint}{note}: {result.steps} steps, "
                            f"loss {result.metrics.get('loss', float('nan')):.4f}. It is now the active model.")
        show_info(f"napari-emseg: fine-tuned model saved to {result.checkpoint}")

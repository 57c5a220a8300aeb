"""Segment dock widget: one-click presets, or the active model with advanced settings.

Predicts maps tiled over the image in a worker thread, shows them as image layers and the
instances as a Labels layer (both scaled like the image); post-processing can be re-run with
new thresholds without predicting again; labels export to zarr or TIFF.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ._jobs import JobRunner
from .device_choice import DeviceChoice
from .layers import chosen_grayscale, layer_voxel_size
from .measure_panel import MeasurePanel
from .proofread_panel import ProofreadPanel
from .segment_settings import SegmentSettings
from .session import session_for

logger = logging.getLogger(__name__)


class SegmentWidget(QWidget):
    """Thin front end of :func:`napari_emseg.workflows.segment_job`."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.runner: JobRunner | None = None
        self.segmentation: Any = None
        self.labels_layer: Any = None
        self._labels_postprocess: Any = None  # the post-processing that made the labels shown
        self._made_with: dict[str, Any] = {}  # model, preset and settings of the last segmentation

        self.image_combo: ComboBox = create_widget(annotation=Image, label="image")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("active model (fine-tune one) or a checkpoint")
        self.browse = QPushButton("...")
        self.mito_button = QPushButton("Mitochondria")
        self.neuron_button = QPushButton("Neurons")
        self.run_button = QPushButton("Segment with model")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)

        # advanced settings (the box's controls, named here as well)
        self.settings = SegmentSettings()
        self.tile, self.batch, self.tta = self.settings.tile, self.settings.batch, self.settings.tta
        self.threshold, self.min_size = self.settings.threshold, self.settings.min_size
        self.seed_fg, self.seed_contour = self.settings.seed_fg, self.settings.seed_contour
        self.fg_threshold = self.settings.fg_threshold
        self.painted_combo: ComboBox = create_widget(annotation=Labels, label="painted")
        self.tune_button = QPushButton("Tune thresholds on painted slices")
        self.tune_button.setEnabled(False)
        self.tuned: Any = None  # post-processing config found by tuning (fields without a control)
        # post-processing: the model's calibration (or a preset's settings) unless the user changed a control
        self._base: Any = None  # the SegmentConfig the controls apply to (calibrated / preset)
        self._post_source: dict[str, Any] = {}  # where its post-processing came from
        self.rerun_button = QPushButton("Re-run post-processing")
        self.rerun_button.setEnabled(False)
        self.export_button = QPushButton("Export labels...")
        self.export_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.voxel_label = QLabel("")
        self.voxel_label.setWordWrap(True)
        self.measure = MeasurePanel(napari_viewer, lambda: (self.labels_layer, self._image_layer))
        self.proofread = ProofreadPanel(napari_viewer, lambda: (self.labels_layer, self.segmentation), self.measure)
        self._image_layer: Any = None

        form = QFormLayout()
        form.addRow("image", self.image_combo.native)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.browse)
        form.addRow("model", model_row)
        form.addRow("voxel sizes", self.voxel_label)
        self.device = DeviceChoice(self.session)
        form.addRow("device", self.device)
        presets = QHBoxLayout()
        presets.addWidget(self.mito_button)
        presets.addWidget(self.neuron_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        # the controls scroll in a short dock instead of being squeezed over each other
        inner = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        layout = QVBoxLayout(inner)
        layout.addLayout(form)
        layout.addWidget(QLabel("One click (bundled models):"))
        layout.addLayout(presets)
        layout.addLayout(buttons)
        layout.addWidget(self.settings)
        tune_row = QHBoxLayout()
        tune_row.addWidget(self.painted_combo.native, 1)
        tune_row.addWidget(self.tune_button)
        layout.addLayout(tune_row)
        layout.addWidget(self.rerun_button)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addWidget(self.proofread)
        layout.addWidget(self.measure)
        layout.addStretch(1)

        for combo in (self.image_combo, self.painted_combo):
            combo.reset_choices()
            napari_viewer.layers.events.inserted.connect(combo.reset_choices)
            napari_viewer.layers.events.removed.connect(combo.reset_choices)
        self.tune_button.clicked.connect(lambda: self.tune())
        self.browse.clicked.connect(self._browse)
        self.run_button.clicked.connect(lambda: self.start())
        self.mito_button.clicked.connect(lambda: self.start(preset="mitochondria"))
        self.neuron_button.clicked.connect(lambda: self.start(preset="neurons"))
        self.cancel_button.clicked.connect(self.cancel)
        self.rerun_button.clicked.connect(self.rerun_postprocess)
        self.export_button.clicked.connect(self._export_dialog)
        self.session.model_changed.connect(self._model_changed)
        self.model_edit.textChanged.connect(lambda *_: self.show_voxel_sizes())
        self.image_combo.changed.connect(lambda *_: self.show_voxel_sizes())
        if self.session.model_path is not None:
            self._model_changed(self.session.model_path)

    # -- settings -------------------------------------------------------------------------------
    def _model_changed(self, path: Any) -> None:
        self.model_edit.setText(str(path) if path else "")

    def show_voxel_sizes(self) -> str:
        """The model's and the image's voxel sizes side by side, and whether data is resampled."""
        from ..errors import EmsegError
        from ..resample import describe_voxel_sizes

        model, image = self.model_edit.text().strip(), self.image_combo.value
        text = ""
        if model and image is not None:
            try:
                text = describe_voxel_sizes(model, layer_voxel_size(image))
            except (EmsegError, OSError) as err:
                text = f"cannot read the model: {err}"
        self.voxel_label.setText(text)
        return text

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Segmentation checkpoint", "",
                                              "Checkpoints (*.safetensors *.zip)")
        if path:
            self.model_edit.setText(path)

    def config(self, base: Any = None):
        """The :class:`SegmentConfig` the controls describe: ``base`` (a preset's, or the model's
        post-processing calibrated on its painted slices; default: that of the last segmentation)
        with the controls the user changed on top."""
        from ..workflows import SegmentConfig

        cfg = base or self._base or SegmentConfig()
        if self.tuned is not None and self.segmentation is not None:
            key = "neurons" if self.segmentation.target in ("affinities", "boundaries") else "mitochondria"
            if isinstance(self.tuned, type(getattr(cfg, key))):
                cfg = cfg.replace(**{key: self.tuned})
        cfg = cfg.replace(inference=self.settings.inference(cfg.inference, self.session.device))
        return self.settings.apply_user_changes(cfg)

    def preset_config(self, preset: str) -> Any:
        """What a one-click button runs: the config of ``segment --preset PRESET``, with the Advanced
        box's tile, batch and TTA and the session's device as the CLI's options
        (:func:`napari_emseg.presets.preset_segment_config`); thresholds set by hand do not apply."""
        from ..inference.config import InferenceConfig
        from ..presets import preset_segment_config

        return preset_segment_config(preset, inference=self.settings.inference(InferenceConfig(), self.session.device))

    def _model_base(self, model: Any) -> tuple[Any, str | None, dict[str, Any]]:
        """SegmentConfig with the checkpoint's calibrated post-processing, its section and source
        (the defaults when the checkpoint stores none; an unreadable file is left to the job)."""
        from ..calibration import resolve_postprocess
        from ..models.checkpoint import load_checkpoint
        from ..workflows import SegmentConfig

        try:
            ckpt = load_checkpoint(model, tensors=False)
            section = SegmentConfig.section_for(ckpt.info.target)
        except Exception:  # the segment job reports it
            return SegmentConfig(), None, {}
        post, source = resolve_postprocess(ckpt.card, ckpt.info.target)
        return SegmentConfig().replace(**{section: post}), section, source

    def _source_for(self, target: str, post: Any) -> dict[str, Any]:
        """Which settings made the labels: calibrated, preset, tuned or defaults, and the user's changes."""
        base = {"source": "tuned on painted slices (Tune button)"} if self.tuned is not None else (
            dict(self._post_source) or {"source": "defaults"})
        return self.settings.source_for(target, post, base)

    # -- running --------------------------------------------------------------------------------
    def start(self, preset: str | None = None) -> JobRunner | None:
        """Segment the chosen image with a preset's model or the model in the model field."""
        from ..errors import EmsegError
        from ..presets import preset_model_path
        from ..workflows import segment_job

        if self.image_combo.value is None:
            show_warning("napari-emseg: choose an image layer to segment")
            return None
        image = chosen_grayscale(self.viewer, self.image_combo)
        if image is None:
            return None
        if image.ndim not in (2, 3):
            show_warning(f"napari-emseg: '{image.name}' is not a grayscale 2D/3D image")
            return None
        base = None
        if preset is not None:
            try:
                model = preset_model_path(preset)
            except EmsegError as err:
                show_warning(f"napari-emseg: {err}")
                return None
            self.settings.forget_user_changes()  # one click: the preset's settings, as `segment --preset`
            base = self.preset_config(preset)
            section = "neurons" if preset == "neurons" else "mitochondria"
            post_source = {"source": f"preset {preset} (tuned when its model was trained)"}
        else:
            model = self.model_edit.text().strip()
            if not model:
                show_warning("napari-emseg: no model yet: fine-tune one (Fine-tune widget), pick a checkpoint, "
                             "or use a one-click preset")
                return None
            base, section, post_source = self._model_base(model)
        if section is not None:
            self.settings.show_settings(getattr(base, section))
        self._base, self._post_source, self.tuned = base, post_source, None
        cfg = self.config(base)
        data = image.data if image.ndim == 3 else np.asarray(image.data)[None]
        scale = layer_voxel_size(image)
        self._image_layer = image
        self._scale = image.scale[-3:] if image.ndim == 3 else (1.0, *image.scale)
        self._translate = image.translate[-3:] if image.ndim == 3 else (0.0, *image.translate)
        self._image_name = image.name
        self._set_running(True)
        self.status.setText(f"segmenting '{image.name}' with {Path(str(model)).name} ...")

        self._made_with = {"model": str(model), "preset": preset, "image_layer": image.name,
                           "inference": cfg.inference.to_dict(), "voxel_match": cfg.voxel_match.to_dict()}

        source = getattr(getattr(image, "source", None), "path", None)
        attrs = {"source": {"image": source}} if source else None

        extents = image.metadata.get("extents") if image.ndim == 3 else None  # micrographs of different sizes

        def make_job():  # the provenance bundle is built in the worker and written on export
            return segment_job(model, data, cfg, voxel_size=scale, attrs=attrs, provenance=True, calibrated=False,
                               extents=extents)

        self.runner = JobRunner(make_job, on_done=lambda seg: self._show_result(seg, cfg),
                                on_finish=lambda: self._set_running(False),
                                on_progress=lambda e: self.status.setText(e.describe()[:200]),
                                description="segment")
        return self.runner.start()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def rerun_postprocess(self) -> JobRunner | None:
        """New thresholds on the kept predictions: no re-prediction."""
        from ..workflows import postprocess_job

        if self.segmentation is None:
            show_warning("napari-emseg: segment first; then thresholds can be changed and re-run")
            return None
        cfg = self.config()
        seg = self.segmentation
        self._set_running(True)

        def done(labels: Any) -> None:
            seg.labels = labels
            self._show_labels(labels, seg.target, cfg.postprocess_for(seg.target))

        self.runner = JobRunner(lambda: postprocess_job(seg, cfg), on_done=done,
                                on_finish=lambda: self._set_running(False), description="post-process")
        return self.runner.start()

    def tune(self) -> JobRunner | None:
        """Search post-processing settings that score best on the painted slices (no re-prediction)."""
        from ..tuning import tune_job

        painted = self.painted_combo.value
        if self.segmentation is None or painted is None:
            show_warning("napari-emseg: segment first, and choose the Labels layer you painted")
            return None
        seg = self.segmentation
        labels = np.asarray(painted.data)
        if labels.shape != tuple(seg.predictions.shape[1:]):
            show_warning(f"napari-emseg: '{painted.name}' {labels.shape} does not match the segmented image "
                         f"{tuple(seg.predictions.shape[1:])}")
            return None
        self._set_running(True)

        def done(result: Any) -> None:
            self.tuned = result.config
            self.settings.forget_user_changes()  # the tuned values replace what was set by hand
            self.settings.show_settings(result.config)
            self.status.setText(f"tuned on the painted slices: {result.metric} {result.score:.3f} "
                                f"(defaults {result.base_score:.3f}); re-running post-processing ...")

        def finish() -> None:
            self._set_running(False)
            if self.tuned is not None:
                self.rerun_postprocess()  # labels with the tuned settings

        start_from = self.config().postprocess_for(seg.target)  # the settings in use are always tried too
        self.runner = JobRunner(lambda: tune_job(seg.predictions, seg.target, labels, offsets=seg.offsets,
                                                 voxel_size=seg.voxel_size, base=start_from),
                                on_done=done, on_finish=finish, description="tune")
        return self.runner.start()

    def _set_running(self, running: bool) -> None:
        for b in (self.run_button, self.mito_button, self.neuron_button):
            b.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.rerun_button.setEnabled(not running and self.segmentation is not None)
        self.tune_button.setEnabled(not running and self.segmentation is not None)
        self.export_button.setEnabled(not running and self.segmentation is not None)

    def _show_result(self, seg: Any, cfg: Any) -> None:
        self.segmentation = seg
        self.tuned = None
        pred = seg.predictions
        for i, channel in enumerate(seg.channel_names):  # one layer per channel, the first shown
            self._set_image(f"{self._image_name} {channel}", np.asarray(pred[i]), self._scale, visible=(i == 0))
        self._show_labels(seg.labels, seg.target, cfg.postprocess_for(seg.target))

    def _set_image(self, name: str, data: np.ndarray, scale: Any, visible: bool) -> None:
        data = data.astype(np.float32) / (255.0 if data.dtype == np.uint8 else 1.0)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
        else:
            self.viewer.add_image(data, name=name, scale=scale, translate=self._translate, colormap="magma",
                                  contrast_limits=(0, 1), blending="additive", opacity=0.6, visible=visible)

    def _show_labels(self, labels: np.ndarray, target: str, postprocess: Any) -> None:
        self._labels_postprocess = postprocess
        task = {"bcd": "mitochondria", "affinities": "neurons", "boundaries": "neurons"}.get(target, target)
        name = f"{self._image_name} {task}"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=self._scale, translate=self._translate)
        self.labels_layer = self.viewer.layers[name]
        self.proofread.reset()  # new labels: edits of the old ones no longer apply
        from ..calibration import describe_source

        source = self._source_for(target, postprocess)  # recorded with the labels and in the provenance
        self._made_with["postprocess_source"] = source
        if self.segmentation is not None:
            self.segmentation.postprocess_source = source
            if self.segmentation.provenance is not None:
                self.segmentation.provenance["postprocess_source"] = source
        n = int(labels.max())
        self.status.setText(f"{n} {task} objects in '{name}' ({describe_source(source)}). Change thresholds "
                            "and re-run post-processing, or export the labels.")
        self._set_running(False)

    # -- export ---------------------------------------------------------------------------------
    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.zarr", "Zarr (*.zarr);;TIFF (*.tif)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)  # export asks
        if path:
            self.export(path)

    def export(self, path: str | Path) -> str | None:
        """Write the current labels to ``path`` (``.zarr`` or ``.tif``) with the voxel size and a
        record of what made them (:func:`~napari_emseg.workflows.export_labels`). An existing
        napari-emseg output is replaced only after asking; any other file never."""
        from ..workflows import export_labels
        from ._confirm import may_write

        if self.labels_layer is None:
            show_warning("napari-emseg: nothing to export yet")
            return None
        target = Path(path)
        if target.suffix.lower() not in (".zarr", ".tif", ".tiff"):
            target = target.with_suffix(".zarr")  # as export_labels names it
        if not may_write(self, target):
            return None
        written = export_labels(path, self.labels_layer.data, tuple(float(s) for s in self._scale),
                                self.segmentation, self._labels_postprocess,
                                {**self._made_with, "layer": self.labels_layer.name})
        show_info(f"napari-emseg: labels written to {written}")
        return written


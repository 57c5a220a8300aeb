"""The Segment widget's Advanced box: inference and post-processing controls.

The controls show the post-processing in use (a model's calibration, a preset's settings, tuned
values); a control the user changes wins over them until a one-click preset or tuning replaces
the settings again. The box only turns controls into configs; the widget runs the jobs.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox

NEURON_CONTROLS = frozenset({"threshold", "min_size"})
MITO_CONTROLS = frozenset({"seed_foreground", "seed_contour", "foreground_threshold", "min_size"})


class SegmentSettings(QGroupBox):
    """Tile, batch, TTA and the post-processing thresholds, with a record of what the user changed."""

    def __init__(self) -> None:
        super().__init__("Advanced")
        self.tile = QLineEdit()
        self.tile.setPlaceholderText("model's tile, e.g. 16,128,128")
        self.batch = QSpinBox()
        self.batch.setRange(0, 256)
        self.batch.setSpecialValueText("auto")
        self.tta = QCheckBox("test-time augmentation (flips)")
        self.threshold = _spin(0.5, 0.0, 1.0, 0.05)
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10**9)
        self.min_size.setValue(100)
        self.seed_fg = _spin(0.9, 0.0, 1.0, 0.05)
        self.seed_contour = _spin(0.8, 0.0, 1.0, 0.05)
        self.fg_threshold = _spin(0.85, 0.0, 1.0, 0.05)
        self.user_set: set[str] = set()  # controls the user changed: their values win
        self._setting = False  # the box itself is filling the controls (not a user change)
        for name, control in self.post_controls().items():
            control.valueChanged.connect(lambda *_, n=name: self._user_changed(n))
        form = QFormLayout(self)
        form.addRow("tile z,y,x", self.tile)
        form.addRow("batch", self.batch)
        form.addRow("", self.tta)
        form.addRow("neurons: waterz threshold", self.threshold)
        form.addRow("min object size (voxels)", self.min_size)
        form.addRow("mito: seed foreground >", self.seed_fg)
        form.addRow("mito: seed contour <", self.seed_contour)
        form.addRow("mito: foreground >", self.fg_threshold)

    def post_controls(self) -> dict[str, Any]:
        """Post-processing field name -> its control."""
        return {"threshold": self.threshold, "min_size": self.min_size, "seed_foreground": self.seed_fg,
                "seed_contour": self.seed_contour, "foreground_threshold": self.fg_threshold}

    def _user_changed(self, name: str) -> None:
        if not self._setting:
            self.user_set.add(name)

    def forget_user_changes(self) -> None:
        """The settings shown next replace every control (a one-click preset, tuned values)."""
        self.user_set.clear()

    def show_settings(self, post: Any) -> None:
        """Fill the controls the user did not change with a post-processing config's values."""
        self._setting = True
        try:
            for name, control in self.post_controls().items():
                if hasattr(post, name) and name not in self.user_set:
                    control.setValue(getattr(post, name))
        finally:
            self._setting = False

    def inference(self, base: Any, device: str = "auto") -> Any:
        """``base`` (an :class:`~napari_emseg.inference.InferenceConfig`) with tile, batch, TTA and
        ``device``: the same fields ``segment --tile/--batch/--tta/--device`` set."""
        tile = _triple(self.tile.text())
        return base.replace(tta=self.tta.isChecked(), batch=self.batch.value() or None, device=device,
                            **({"tile": tile} if tile else {}))

    def apply_user_changes(self, cfg: Any) -> Any:
        """``cfg`` (a :class:`~napari_emseg.workflows.SegmentConfig`) with the controls the user changed."""
        mine = {n: c.value() for n, c in self.post_controls().items() if n in self.user_set}
        neurons = cfg.neurons.replace(**{k: v for k, v in mine.items() if k in NEURON_CONTROLS})
        mito = cfg.mitochondria.replace(**{k: v for k, v in mine.items() if k in MITO_CONTROLS})
        return cfg.replace(neurons=neurons, mitochondria=mito)

    def source_for(self, target: str, post: Any, base: dict[str, Any]) -> dict[str, Any]:
        """Which settings made labels of ``target``: ``base`` (calibrated, preset, tuned or defaults)
        and the user's changes on top."""
        fields = NEURON_CONTROLS if target in ("affinities", "boundaries") else MITO_CONTROLS
        mine = sorted(self.user_set & fields)
        if mine and post is not None:
            return {"source": "user", "base": base["source"],
                    "overrides": [f"{k}={getattr(post, k)}" for k in mine if hasattr(post, k)]}
        return base


def _spin(value: float, lo: float, hi: float, step: float) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(3)
    s.setValue(value)
    return s


def _triple(text: str) -> tuple[int, int, int] | None:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        return None
    try:
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        return None

"""Morphometrics table for a Labels layer: measure in physical units, click a row to centre it."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._jobs import JobRunner
from .session import viewer_camera

SHOWN = ("label", "volume_um3", "surface_um2", "length_nm", "branch_points", "mean_intensity")


class MeasurePanel(QWidget):
    """Measures the labels a getter returns; the table drives the viewer and the layer's features."""

    def __init__(self, viewer: Any, get_layers: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.get_layers = get_layers  # () -> (labels_layer, image_layer or None)
        self.table_data: dict[str, np.ndarray] | None = None
        self.runner: JobRunner | None = None
        self._pending: set[int] = set()  # objects edited while a measurement ran
        self.measure_button = QPushButton("Measure objects")
        self.skeleton = QCheckBox("skeleton length / branching")
        self.skeleton.setChecked(True)
        self.csv_button = QPushButton("Save CSV...")
        self.csv_button.setEnabled(False)
        self.table = QTableWidget(0, len(SHOWN))
        self.table.setHorizontalHeaderLabels(list(SHOWN))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(140)
        row = QHBoxLayout()
        row.addWidget(self.measure_button)
        row.addWidget(self.skeleton)
        row.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.table)
        self.measure_button.clicked.connect(lambda: self.measure())
        self.csv_button.clicked.connect(self._save_dialog)
        self.table.cellClicked.connect(self.centre_on_row)

    def measure(self) -> JobRunner | None:
        """Measure every object of the labels layer in a worker thread."""
        from ..morphometrics import MeasureConfig, measure_job

        labels_layer, image_layer = self.get_layers()
        if labels_layer is None:
            show_warning("napari-emseg: segment first (or choose a Labels layer) to measure objects")
            return None
        scale = tuple(float(s) for s in labels_layer.scale[-3:])
        labels = np.asarray(labels_layer.data)
        image = np.asarray(image_layer.data) if image_layer is not None else None
        cfg = MeasureConfig(skeleton=self.skeleton.isChecked())
        self.measure_button.setEnabled(False)
        self.runner = JobRunner(lambda: measure_job(labels, scale, image, cfg),
                                on_done=lambda table: self._show(labels_layer, table),
                                on_finish=self._finished, description="measure")
        return self.runner.start()

    def refresh(self, ids: Any) -> JobRunner | None:
        """Measure the objects ``ids`` again after an edit (only their boxes are read); the other
        rows stay. Nothing before a first :meth:`measure`; edits made meanwhile are queued."""
        from ..morphometrics import MeasureConfig, remeasure_job

        labels_layer, image_layer = self.get_layers()
        if self.table_data is None or labels_layer is None:
            return None
        self._pending |= {int(i) for i in ids}
        if self.runner is not None and self.runner.running:
            return None  # picked up when the running job finishes
        todo, self._pending = sorted(self._pending), set()
        labels, table = labels_layer.data, self.table_data
        image = image_layer.data if image_layer is not None else None
        if image is not None and len(image.shape) == len(labels.shape) - 1:
            image = np.asarray(image)[None]
        scale = tuple(float(s) for s in labels_layer.scale[-3:])
        cfg = MeasureConfig(skeleton=self.skeleton.isChecked())
        self.measure_button.setEnabled(False)
        self.runner = JobRunner(lambda: remeasure_job(table, labels, todo, scale, image, cfg),
                                on_done=lambda new: self._show(labels_layer, new), on_finish=self._finished,
                                description="measure")
        return self.runner.start()

    def _finished(self) -> None:
        self.measure_button.setEnabled(True)
        if self._pending:  # objects edited while this job ran
            self.refresh(())

    def _show(self, labels_layer: Any, table: dict[str, np.ndarray]) -> None:
        from ..morphometrics import napari_features

        self.table_data = table
        labels_layer.features = napari_features(table)
        self._fill(table)
        self.csv_button.setEnabled(True)

    def _fill(self, table: dict[str, np.ndarray]) -> None:
        cols = [c for c in SHOWN if c in table]
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        n = len(table["label"])
        self.table.setRowCount(n)
        for i in range(n):
            for j, c in enumerate(cols):
                v = table[c][i]
                text = f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def centre_on_row(self, row: int, _col: int = 0) -> None:
        """Centre the camera on the object of ``row`` and show its slice."""
        labels_layer, _ = self.get_layers()
        if self.table_data is None or labels_layer is None:
            return
        t = self.table_data
        centroid = np.array([t["centroid_z"][row], t["centroid_y"][row], t["centroid_x"][row]], float)
        world = centroid * np.asarray(labels_layer.scale[-3:]) + np.asarray(labels_layer.translate[-3:])
        self.viewer.dims.set_point(self.viewer.dims.ndim - 3, world[0])
        viewer_camera(self.viewer).center = tuple(world[-2:]) if self.viewer.dims.ndisplay == 2 else tuple(world)
        labels_layer.selected_label = int(t["label"][row])

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save measurements", "objects.csv", "CSV (*.csv)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)  # may_write asks
        self.save(path)

    def save(self, path: str | None) -> str | None:
        """Write the table to ``path`` as CSV; an earlier table is replaced after asking, any other file never."""
        from ._confirm import may_write

        if path and self.table_data is not None and may_write(self, path):
            from ..morphometrics import write_csv

            written = str(write_csv(self.table_data, path))
            show_info(f"napari-emseg: measurements written to {written}")
            return written
        return None

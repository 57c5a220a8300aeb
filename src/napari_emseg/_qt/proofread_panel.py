"""Proofreading in the Segment widget: click objects or seeds, then merge, split, delete, fill holes, undo.

Clicks go into a Points layer ("proofread points"); each button turns them into one edit of
:class:`napari_emseg.proofread.Proofreader`, computed in a worker thread and written on the UI
thread. Every edit is logged in the segmentation's provenance bundle (``"proofreading"``), so
exported labels can be made again with ``napari-emseg rerun``; the measure table is refreshed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QCheckBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ._jobs import JobRunner

POINTS = "proofread points"
HELP = ("Click objects (merge, delete, fill holes) or two or more seeds inside one object (split) "
        "with 'Click objects / seeds', then press an action.")


class ProofreadPanel(QWidget):
    """Edits the labels the getter returns, on the maps of the segmentation that made them."""

    def __init__(self, viewer: Any, get_state: Any, measure: Any = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.get_state = get_state  # () -> (labels layer or None, Segmentation or None)
        self.measure = measure  # a MeasurePanel to refresh after each edit
        self.editor: Any = None  # Proofreader of the labels shown
        self.runner: JobRunner | None = None
        self.pick_button = QPushButton("Click objects / seeds")
        self.merge_button = QPushButton("Merge")
        self.split_button = QPushButton("Split")
        self.delete_button = QPushButton("Delete")
        self.fill_button = QPushButton("Fill holes")
        self.undo_button = QPushButton("Undo")
        self.per_slice = QCheckBox("holes per slice")
        self.status = QLabel(HELP)
        self.status.setWordWrap(True)
        grid = QGridLayout()
        for i, b in enumerate((self.pick_button, self.merge_button, self.split_button, self.delete_button,
                               self.fill_button, self.per_slice, self.undo_button)):
            grid.addWidget(b, i // 4, i % 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Proofread:"))
        layout.addLayout(grid)
        layout.addWidget(self.status)
        self.pick_button.clicked.connect(self.pick)
        for button, op in ((self.merge_button, "merge"), (self.split_button, "split"),
                           (self.delete_button, "delete"), (self.fill_button, "fill_holes")):
            button.clicked.connect(lambda *_, op=op: self.run(op))
        self.undo_button.clicked.connect(self.undo)
        self._set_busy(False)

    # -- clicks -----------------------------------------------------------------------------------
    def points_layer(self) -> Any:
        """The Points layer that takes the clicks (added over the labels when missing)."""
        labels, _ = self.get_state()
        if POINTS in self.viewer.layers:
            return self.viewer.layers[POINTS]
        return self.viewer.add_points(np.empty((0, labels.ndim)), name=POINTS, ndim=labels.ndim, size=6,
                                      face_color="yellow", scale=labels.scale, translate=labels.translate)

    def pick(self) -> None:
        """Make the Points layer active in add mode: each click on the canvas is one point."""
        if self.get_state()[0] is None:
            show_warning("napari-emseg: segment first; then click objects to proofread them")
            return
        layer = self.points_layer()
        self.viewer.layers.selection.active = layer
        layer.mode = "add"

    def clicked(self) -> list[list[int]]:
        """The clicked points as voxel indices of the labels."""
        labels, _ = self.get_state()
        if labels is None or POINTS not in self.viewer.layers:
            return []
        layer = self.viewer.layers[POINTS]
        world = [layer.data_to_world(p) for p in np.asarray(layer.data)]
        return [[int(v) for v in np.round(labels.world_to_data(w))] for w in world]

    # -- editing ----------------------------------------------------------------------------------
    def editor_for_labels(self) -> Any:
        """The :class:`~napari_emseg.proofread.Proofreader` of the labels shown (a new log when they changed)."""
        from ..proofread import Proofreader

        labels, seg = self.get_state()
        if labels is None:
            return None
        if self.editor is None or self.editor.labels is not labels.data:
            pred = getattr(seg, "predictions", None)
            self.editor = Proofreader(labels.data, pred, getattr(seg, "target", None),
                                      getattr(seg, "channel_names", ()))
            paint = getattr(labels.events, "paint", None)
            if paint is not None:
                paint.connect(self._painted)
        return self.editor

    def _painted(self, *_: Any) -> None:
        if self.editor is not None:
            self.editor.invalidate()  # brush strokes moved objects' boxes; they are not in the log
            self.status.setText("painted by hand: such strokes are kept but not replayed by 'rerun'")

    def run(self, op: str) -> JobRunner | None:
        """One edit from the clicked points (for delete / fill holes: or the layer's selected label)."""
        from ..proofread import edit_job

        editor = self.editor_for_labels()
        if editor is None:
            show_warning("napari-emseg: segment first; then click objects to proofread them")
            return None
        points = self.clicked()
        labels, _ = self.get_state()
        if op == "split":
            record: dict[str, Any] = {"op": op, "seeds": points}
        elif points:
            record = {"op": op, "points": points}
        elif op != "merge" and labels.selected_label:
            record = {"op": op, "ids": [int(labels.selected_label)]}
        else:
            show_warning(f"napari-emseg: {HELP}")
            return None
        if op == "fill_holes":
            record["per_slice"] = self.per_slice.isChecked()
        self._set_busy(True)
        self.runner = JobRunner(lambda: edit_job(editor, record), on_done=lambda edit: self._commit(editor, edit),
                                on_finish=lambda: self._set_busy(False), description=f"proofread: {op}")
        return self.runner.start()

    def _commit(self, editor: Any, edit: Any) -> None:
        if editor is not self.editor:  # the labels were replaced meanwhile
            return
        editor.commit(edit)
        if POINTS in self.viewer.layers:
            layer = self.viewer.layers[POINTS]
            layer.data = np.empty((0, layer.ndim))
        rec = edit.record
        what = {"merge": f"merged {rec.get('ids')}", "delete": f"deleted {rec.get('ids')}",
                "fill_holes": f"filled holes of {rec.get('ids')}",
                "split": f"split {rec.get('id')} into {[rec.get('id'), *rec.get('new_ids', [])]}"}[rec["op"]]
        self._changed(edit, f"{what} ({len(editor.log)} edit(s), recorded for rerun)")

    def undo(self) -> None:
        """Take back the last edit exactly."""
        edit = self.editor.undo() if self.editor is not None else None
        if edit is None:
            self.status.setText("nothing to undo")
            return
        self._changed(edit, f"undid {edit.record['op']} ({len(self.editor.log)} edit(s) left)")

    def _changed(self, edit: Any, text: str) -> None:
        labels, _ = self.get_state()
        if labels is not None:
            labels.refresh()
        self._record()
        self.status.setText(text)
        if self.measure is not None:
            self.measure.refresh(edit.changed)

    def reset(self) -> None:
        """New labels: a new log (the old edits no longer apply)."""
        self.editor = None
        self._record()
        self.status.setText(HELP)

    def _record(self) -> None:
        from ..proofread import bundle_section

        _, seg = self.get_state()
        bundle = getattr(seg, "provenance", None)
        if bundle is None:
            return
        if self.editor is not None and self.editor.log:
            bundle["proofreading"] = bundle_section(self.editor.log)
        else:
            bundle.pop("proofreading", None)

    def _set_busy(self, busy: bool) -> None:
        for b in (self.merge_button, self.split_button, self.delete_button, self.fill_button, self.undo_button):
            b.setEnabled(not busy)

"""Encoder picker: the catalogue with each model card, local checkpoints, and the compute device
(a choice shared with the Fine-tune and Segment widgets through the viewer's session)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from .device_choice import DeviceChoice
from .session import session_for


class EncoderWidget(QWidget):
    """Pick the encoder that fine-tuning starts from; see what each one is."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.device = DeviceChoice(self.session)
        self.list = QListWidget()
        self.card = QTextBrowser()
        self.card.setMinimumHeight(160)
        self.load_button = QPushButton("Load checkpoint...")
        layout = QVBoxLayout(self)
        layout.addWidget(self.device_label)
        device_row = QHBoxLayout()
        device_row.addWidget(QLabel("Device:"))
        device_row.addWidget(self.device, 1)
        layout.addLayout(device_row)
        layout.addWidget(QLabel("Encoders (pretrained first):"))
        layout.addWidget(self.list, 2)
        layout.addWidget(self.card, 3)
        layout.addWidget(self.load_button)
        self.list.currentItemChanged.connect(self._selected)
        self.load_button.clicked.connect(self._browse)
        self._entries: dict[str, Any] = {}
        self.refresh()
        self._show_device()

    def refresh(self, extra: Path | None = None) -> None:
        """Fill the list from the catalogue (plus a local checkpoint the user loaded)."""
        from ..models.registry import list_encoders

        self.list.clear()
        self._entries = {AUTO_NAME: AUTO_ABOUT, **{e.name: e for e in list_encoders()}}
        if extra is not None:
            self._entries[str(extra)] = extra
        for name, entry in self._entries.items():
            label = name if isinstance(entry, Path) else (
                f"{name}    [best for the data]" if isinstance(entry, str) else f"{name}    [{entry.source}]")
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.list.addItem(item)
            if name == self.session.encoder:
                self.list.setCurrentItem(item)
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)

    def select(self, name: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.list.setCurrentRow(i)
                return
        raise KeyError(name)

    def _selected(self, item: QListWidgetItem | None, _prev: Any = None) -> None:
        if item is None:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        self.session.set_encoder(name)
        self.card.setHtml(card_html(self._entries[name]))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Encoder or fine-tuned checkpoint", "",
                                              "Checkpoints (*.safetensors *.pth *.pt);;bioimage.io packages (*.zip)")
        if path:
            self.load_path(path)

    def load_path(self, path: str | Path) -> None:
        """Show a local checkpoint's card and choose it."""
        from napari.utils.notifications import show_error

        from ..errors import EmsegError
        from ..models.checkpoint import load_checkpoint

        try:
            load_checkpoint(path)
        except EmsegError as err:
            show_error(f"napari-emseg: {err}")
            return
        self.refresh(extra=Path(path))
        self.select(str(Path(path)))

    def _show_device(self) -> None:
        from ..device import device_summary

        info = device_summary()
        if info["gpus"]:
            gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in info["gpus"])
            text = f"Compute: CUDA usable: {gpus}"
        elif info["mps_available"]:
            text = "Compute: Apple GPU (MPS)"
        else:
            text = "Compute: CPU only (CUDA not usable): fine-tuning and segmenting will be slow"
        self.device_label.setText(f"{text} | torch {info['torch']}")


AUTO_NAME = "auto"
AUTO_ABOUT = ("Chosen from the data when fine-tuning starts: a plain 2D U-Net for separate images and serial "
              "sections, the 3D MS-Con residual U-Net for near-isotropic volumes (the choice and its reason go "
              "into the model card).")


def card_html(entry: Any) -> str:
    """An encoder's model card as HTML (catalogue entry, a checkpoint path, or the text of ``auto``)."""
    if isinstance(entry, str):
        return f"<p>{html.escape(entry)}</p>"
    if isinstance(entry, Path):
        from ..models.checkpoint import load_checkpoint

        ck = load_checkpoint(entry)
        rows = {"file": str(entry), "architecture": ck.config.arch, "task": ck.info.task,
                "predicts": ", ".join(ck.info.channel_names), **{k: v for k, v in ck.card.items() if not isinstance(v, dict)}}
    else:
        rows = {
            "family": entry.family, "source": entry.source, "pretraining": entry.method, "data": entry.data,
            "patch": "x".join(map(str, entry.patch_size)) if entry.patch_size else "-",
            "voxel size (nm)": "x".join(f"{v:g}" for v in entry.voxel_size) if entry.voxel_size else "any / unknown",
            "parameters": f"{entry.params / 1e6:.2f} M", "licence": entry.licence, "about": entry.description,
        }
        for key in ("steps", "final_loss", "command"):
            if key in entry.card:
                rows[key] = entry.card[key]
    body = "".join(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table cellspacing=4>{body}</table>"

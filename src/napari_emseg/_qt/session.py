"""State shared by the dock widgets of one viewer: the chosen encoder, the active model, the device.

One :class:`Session` per napari viewer (weakly keyed, so closing a viewer frees it). The
Encoder widget sets the encoder; Fine-tune sets the active model when it saves a checkpoint;
Segment uses it. The device (``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"``), chosen in any of the
three widgets, goes into the fine-tune and segment configs. Changes are announced with psygnal signals.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from psygnal import Signal


class Session:
    """Per-viewer choices of the napari-emseg widgets."""

    encoder_changed = Signal(str)
    model_changed = Signal(object)
    device_changed = Signal(str)

    def __init__(self) -> None:
        self.encoder: str = "auto"
        self.model_path: Path | None = None
        self.device: str = "auto"

    def set_encoder(self, name: str) -> None:
        self.encoder = str(name)
        self.encoder_changed.emit(self.encoder)

    def set_device(self, name: str) -> None:
        """The device fine-tuning and segmenting run on (a value of :func:`napari_emseg.device.device_choices`)."""
        if str(name) != self.device:
            self.device = str(name)
            self.device_changed.emit(self.device)

    def set_model(self, path: str | Path | None) -> None:
        self.model_path = Path(path) if path else None
        self.model_changed.emit(self.model_path)


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session of ``viewer`` (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


def viewer_camera(viewer: Any) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before."""
    camera = getattr(getattr(viewer, "scene", None), "camera", None)
    return camera if camera is not None else viewer.camera

"""A menu of compute devices bound to a viewer's session (Encoder, Fine-tune and Segment widgets)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox


class DeviceChoice(QComboBox):
    """auto / cpu / cuda:N for each visible GPU / mps where usable; every copy shows the session's choice.

    Choosing sets :attr:`Session.device <napari_emseg._qt.session.Session.device>`, which the
    fine-tune and segment configs take.
    """

    def __init__(self, session: Any) -> None:
        super().__init__()
        from ..device import device_choices

        self.session = session
        for value, label in device_choices():
            self.addItem(label, value)
        self.setToolTip("where fine-tuning and segmentation run; auto: CUDA, then Apple MPS, then the CPU")
        self.show_device(session.device)
        self.currentIndexChanged.connect(self._chosen)
        session.device_changed.connect(self.show_device)

    def values(self) -> list[str]:
        """The devices offered, in menu order."""
        return [self.itemData(i) for i in range(self.count())]

    def choose(self, value: str) -> None:
        """Select device ``value`` (one of :meth:`values`)."""
        index = self.findData(value)
        if index < 0:
            raise KeyError(f"device {value!r} is not offered here; choose one of {self.values()}")
        self.setCurrentIndex(index)

    def show_device(self, value: str) -> None:
        index = self.findData(value)
        if index >= 0 and index != self.currentIndex():
            self.setCurrentIndex(index)

    def _chosen(self, index: int) -> None:
        value = self.itemData(index)
        if value:
            self.session.set_device(value)

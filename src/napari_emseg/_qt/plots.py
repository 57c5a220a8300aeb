"""A minimal live line plot (loss curve) drawn with QPainter: no plotting dependency."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossCurve(QWidget):
    """Draws named series of (step, value) points on a shared log-scaled y axis."""

    COLORS = {"loss": "#4fc3f7", "val_loss": "#ffb74d"}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def add(self, name: str, step: float, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        self.series.setdefault(name, []).append((float(step), float(value)))
        self.update()

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h, m = self.width(), self.height(), 6
        p.fillRect(self.rect(), QColor("#262930"))
        pts = [pt for s in self.series.values() for pt in s]
        if len(pts) < 2:
            p.setPen(QColor("#888"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss curve appears here")
            return
        xs = [x for x, _ in pts]
        ys = [math.log10(max(y, 1e-8)) for _, y in pts]
        x0, x1 = min(xs), max(xs) or 1
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-6:
            y0, y1 = y0 - 0.5, y1 + 0.5
        for i, (name, s) in enumerate(self.series.items()):
            poly = QPolygonF([
                QPointF(m + (x - x0) / max(x1 - x0, 1e-9) * (w - 2 * m),
                        h - m - (math.log10(max(y, 1e-8)) - y0) / (y1 - y0) * (h - 2 * m))
                for x, y in s
            ])
            p.setPen(QPen(QColor(self.COLORS.get(name, "#aed581")), 1.5))
            p.drawPolyline(poly)
            p.drawText(m + 4, m + 12 + 14 * i, f"{name} {s[-1][1]:.3g}")

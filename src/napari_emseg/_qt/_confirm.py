"""Ask before a widget replaces a file (export, save): the GUI side of :mod:`napari_emseg._outputs`.

:func:`ask_replace` is the only call that shows a dialog; tests monkeypatch it
(``monkeypatch.setattr(_confirm, "ask_replace", lambda parent, path: True)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_warning

__all__ = ["ask_replace", "may_write"]


def ask_replace(parent: Any, path: Path) -> bool:
    """A Yes/No question: replace the napari-emseg output at ``path``? (default No)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent, "Replace?", f"{path}\n\nexists (written earlier by napari-emseg). Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def may_write(parent: Any, path: str | os.PathLike) -> bool:
    """Whether the widget may write ``path``: yes when it does not exist; a file napari-emseg did
    not write is refused (a warning names it); an earlier napari-emseg output after asking."""
    from .._outputs import is_ours

    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return True
    if not is_ours(p):
        show_warning(f"napari-emseg: {p} exists and was not written by napari-emseg; it is never replaced. "
                     "Choose another name.")
        return False
    return bool(ask_replace(parent, p))

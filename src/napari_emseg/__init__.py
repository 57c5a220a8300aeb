"""napari-emseg: electron-microscopy segmentation with pretrained encoders and few-slice fine-tuning.

The package root is Qt-free: importing it (or any subpackage but ``_qt``) never imports qtpy,
magicgui or napari.qt, so the same core runs headless on servers. Heavy dependencies (torch,
waterz, dask) are imported by the modules that need them, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it; resolved lazily so `import napari_emseg` stays cheap.
_LAZY = {
    "open_volume": "napari_emseg.io",
    "write_volume": "napari_emseg.io",
    "Volume": "napari_emseg.io",
    "VolumeError": "napari_emseg.io",
    "Progress": "napari_emseg.progress",
    "Cancelled": "napari_emseg.progress",
    "CancelToken": "napari_emseg.progress",
    "drain": "napari_emseg.progress",
    "make_synthetic_em": "napari_emseg.data.synthetic",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_emseg' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

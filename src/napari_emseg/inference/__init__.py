"""Tiled inference over volumes of any size: blocks with context, blended tiles, resume.

>>> from napari_emseg.inference import InferenceConfig, predict_tiled   # doctest: +SKIP
>>> from napari_emseg.progress import drain
>>> pred = drain(predict_tiled(model, volume, out="pred.zarr", config=InferenceConfig(tta=True)))

See ``docs/inference.md``. Importing this package imports torch.
"""

from __future__ import annotations

from .config import InferenceConfig
from .output import OutputError
from .predict import predict_tiled, resolve_mode, resolve_tile
from .runner import OutOfMemory

__all__ = ["InferenceConfig", "predict_tiled", "resolve_mode", "resolve_tile", "OutOfMemory", "OutputError"]

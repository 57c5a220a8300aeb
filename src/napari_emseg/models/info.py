"""What a model predicts and how to feed it: the contract between models, inference and widgets.

Every model napari-emseg builds or loads carries a :class:`ModelInfo` (``model.info``), saved
inside its checkpoint. Inference reads it to normalise input, choose tile shapes, turn logits
into probability maps and name the output channels; post-processing reads the channel names
and offsets; the widgets show it.

Conventions
-----------
* Volumes are ``(z, y, x)``; 3D networks take ``(B, C, Z, Y, X)``, 2D networks ``(B, C, Y, X)``.
* Prediction maps are ``(C, Z, Y, X)`` in ``[0, 1]``.
* ``target="affinities"``: channel ``c`` is the probability that voxel ``p`` and voxel
  ``p + offsets[c]`` belong to the same object; the first three offsets are
  ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)`` (z, y, x), long-range offsets follow.
* ``target="boundaries"``: one channel, the probability that a voxel is an in-plane boundary
  (membrane); affinities are derived as ``1 - max(b(p), b(p + offset))``.
* ``target="bcd"``: ``("foreground", "contour", "distance")``; distance is the per-instance
  normalised distance transform in ``[0, 1]`` (1 at an object's centre).
* ``target="semantic"``: one softmax channel per class, class 0 = background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config import Config
from ..data.normalize import NormConfig

Task = Literal["neurons", "mitochondria", "semantic", "reconstruction", "encoder"]
Target = Literal["affinities", "boundaries", "bcd", "semantic", "reconstruction", "features"]

NN_OFFSETS: tuple[tuple[int, int, int], ...] = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))


@dataclass(frozen=True)
class ModelInfo(Config):
    """What a model predicts, and how inputs must be shaped and scaled.

    Attributes
    ----------
    task, target
        What the model is for and what its channels hold (see the module docstring).
    channel_names
        One name per output channel, e.g. ``("aff_z", "aff_y", "aff_x")``.
    activation
        How logits become maps: ``"sigmoid"`` (independent channels), ``"softmax"`` (classes)
        or ``"none"`` (already in the right range).
    spatial_dims
        3 for volumetric networks, 2 for slice-wise networks (applied per z-slice, or per
        plane in ortho-plane inference).
    input_multiple
        ``(z, y, x)``: each tile's shape must be a multiple of this (patch size, poolings).
    tile
        A recommended tile shape ``(z, y, x)`` for inference (also the training patch).
    voxel_size
        ``(z, y, x)`` nm of the data the model was trained on, if known.
    input_zoom
        ``(z, y, x)`` zoom applied to an image before the model sees it when a voxel size (the
        image's or this model's) is unknown, e.g. ``(1, 0.5, 0.5)``: fine-tuning chose a grid
        coarser than the painted image's from the size of the painted objects
        (docs/voxel-size.md, "Working grid"). ``None``: the image as it is.
    norm
        Intensity normalisation the model expects.
    offsets
        Affinity offsets ``(dz, dy, dx)``, one per affinity channel.
    """

    task: Task = "neurons"
    target: Target = "affinities"
    channel_names: tuple[str, ...] = ("aff_z", "aff_y", "aff_x")
    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    spatial_dims: int = 3
    in_channels: int = 1
    input_multiple: tuple[int, int, int] = (1, 16, 16)
    tile: tuple[int, int, int] = (16, 128, 128)
    voxel_size: tuple[float, float, float] | None = None
    input_zoom: tuple[float, float, float] | None = None
    norm: NormConfig = NormConfig()
    offsets: tuple[tuple[int, int, int], ...] = NN_OFFSETS

    @property
    def out_channels(self) -> int:
        return len(self.channel_names)


def apply_activation(logits: Any, info: ModelInfo) -> Any:
    """Turn a batch of logits ``(B, C, ...)`` into maps in ``[0, 1]`` as the model says."""
    import torch

    if info.activation == "sigmoid":
        return torch.sigmoid(logits)
    if info.activation == "softmax":
        return torch.softmax(logits, dim=1)
    return logits

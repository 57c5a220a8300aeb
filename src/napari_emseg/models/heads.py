"""Output heads sized by task: channel names and activations as :class:`ModelInfo` says.

The head itself is the last 1x1 convolution of each architecture (``model.head``), sized by
``ModelConfig.out_channels``; what its channels mean lives in the model's :class:`ModelInfo`.
This module makes that :class:`ModelInfo` for a target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .info import NN_OFFSETS, ModelInfo, Target

__all__ = ["channel_names", "head_info", "affinity_name", "DEFAULT_TASK"]

#: the task a target is usually trained for
DEFAULT_TASK: dict[str, str] = {
    "affinities": "neurons",
    "boundaries": "neurons",
    "bcd": "mitochondria",
    "semantic": "semantic",
    "reconstruction": "reconstruction",
    "features": "encoder",
}
_ACTIVATION = {"semantic": "softmax", "reconstruction": "none", "features": "none"}


def affinity_name(offset: Sequence[int]) -> str:
    """``aff_z`` / ``aff_y`` / ``aff_x`` for the nearest neighbours, ``aff_z-2_x3``-style else
    (the names the fine-tuning targets use)."""
    nonzero = [(ax, int(o)) for ax, o in zip("zyx", offset) if o]
    if len(nonzero) == 1 and abs(nonzero[0][1]) == 1:
        return f"aff_{nonzero[0][0]}"
    return "aff_" + "_".join(f"{ax}{o}" for ax, o in nonzero)


def channel_names(
    target: Target,
    *,
    offsets: Sequence[Sequence[int]] = NN_OFFSETS,
    n_classes: int = 2,
    class_names: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """Output channel names for a target (see :mod:`napari_emseg.models.info`)."""
    if target == "affinities":
        return tuple(affinity_name(o) for o in offsets)
    if target == "boundaries":
        return ("boundary",)
    if target == "bcd":
        return ("foreground", "contour", "distance")
    if target == "semantic":
        if class_names is not None:
            return tuple(class_names)
        if n_classes < 2:
            raise ValueError(f"semantic heads need at least 2 classes (background + one), got {n_classes}")
        return tuple(f"class_{i}" for i in range(n_classes))
    if target == "reconstruction":
        return ("reconstruction",)
    if target == "features":
        return ("features",)
    raise ValueError(f"unknown target {target!r}; choose from {sorted(DEFAULT_TASK)}")


def head_info(
    target: Target,
    *,
    task: str | None = None,
    offsets: Sequence[Sequence[int]] = NN_OFFSETS,
    n_classes: int = 2,
    class_names: Sequence[str] | None = None,
    **fields: Any,
) -> ModelInfo:
    """The :class:`ModelInfo` of a head for ``target``.

    Parameters
    ----------
    target
        ``"affinities"`` (one channel per offset; the first three must be the nearest
        neighbours), ``"boundaries"`` (1), ``"bcd"`` (3), ``"semantic"`` (``n_classes``, softmax),
        ``"reconstruction"`` (1, no activation) or ``"features"`` (bare encoders).
    task
        Defaults to the usual task of the target (:data:`DEFAULT_TASK`).
    offsets, n_classes, class_names
        Affinity offsets; number (or names) of semantic classes, class 0 = background.
    **fields
        Any other :class:`ModelInfo` field (``tile``, ``voxel_size``, ``norm`` ...).

    Examples
    --------
    >>> head_info("bcd").channel_names
    ('foreground', 'contour', 'distance')
    >>> head_info("affinities", offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -9, 0)]).out_channels
    4
    """
    names = channel_names(target, offsets=offsets, n_classes=n_classes, class_names=class_names)
    off = tuple(tuple(int(v) for v in o) for o in offsets)
    if target == "affinities" and off[:3] != NN_OFFSETS:
        raise ValueError(f"affinity offsets must start with the nearest neighbours {NN_OFFSETS}, got {off[:3]}")
    kwargs = dict(task=task or DEFAULT_TASK[target], target=target, channel_names=names,
                  activation=_ACTIVATION.get(target, "sigmoid"))
    if target == "affinities":
        kwargs["offsets"] = off
    return ModelInfo(**{**kwargs, **fields})

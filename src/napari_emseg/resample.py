"""Voxel-size matching: show a model the data at the voxel size it was trained at, lazily.

Every checkpoint records the voxel size of the data it was trained on (``model.info.voxel_size``,
``EncoderEntry.voxel_size`` for catalogue encoders); volumes carry theirs (OME-Zarr / TIFF
metadata, ``--voxel-size``, the napari layer scale). When the two differ by more than a
tolerance on some axis, :func:`napari_emseg.inference.matched.predict_matched` predicts on the image resampled to the model's
grid and resamples the maps back to the image's grid, and fine-tuning resamples the painted crop
(see :func:`napari_emseg.finetune.job.fine_tune`); both log a warning with the two sizes.

Resampling is lazy and blockwise: :class:`Resampled` is an array-like view whose
``view[region]`` reads only the source region the output region needs (plus a halo for the
anti-aliasing filter) and interpolates it separably, axis by axis. Reading a block of the view
gives exactly the values a whole-volume resampling would, so tiles never show seams, and memory
depends on the block read, never on the volume.

Geometry: voxel ``i`` covers ``[i, i + 1) * voxel_size`` nm (centres at ``(i + 0.5) * size``),
so a volume keeps its physical extent: ``n`` voxels of ``s`` nm become ``round(n * s / t)``
voxels of ``t`` nm. Intensities and maps use linear interpolation (``order=1``), with a Gaussian
anti-aliasing filter (sigma ``(f - 1) / 2`` voxels for a shrink by ``f``, as scikit-image's
``resize``) when shrinking; labels use nearest neighbour (``order=0``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._resampled import Resampled, VoxelSize, _triple
from .config import Config

__all__ = [
    "VoxelMatchConfig",
    "VoxelPlan",
    "Resampled",
    "voxel_size_of",
    "zoom_of",
    "plan_voxel_match",
    "plan_zoom",
    "describe_voxel_sizes",
    "match_voxel_size",
    "log_plan",
    "resample",
    "resample_labels",
    "MODEL_GRID_SUFFIX",
    "add_voxel_match_arguments",
    "voxel_match_from_args",
]

logger = logging.getLogger(__name__)

MODEL_GRID_SUFFIX = "_model_grid"
"""A zarr prediction ``OUT/predictions`` made on a resampled image keeps the maps on the model's
grid in ``OUT/predictions_model_grid`` (so an interrupted run resumes)."""


@dataclass(frozen=True)
class VoxelMatchConfig(Config):
    """When and how to match an image's voxel size to a model's.

    Attributes
    ----------
    enabled
        ``False`` never resamples (the model sees the image as it is).
    tolerance
        Relative difference tolerated on an axis: with 0.2, sizes within a factor 1.2 of each
        other count as equal. Only axes beyond it are resampled.
    max_factor
        A larger factor on any axis is taken for a missing or wrong voxel size (e.g. napari's
        default scale of 1 nm): nothing is resampled and a warning asks for the real size.
    antialias
        Gaussian-filter before shrinking (linear interpolation only).
    """

    enabled: bool = True
    tolerance: float = 0.2
    max_factor: float = 8.0
    antialias: bool = True


@dataclass(frozen=True)
class VoxelPlan:
    """What :func:`plan_voxel_match` decided.

    Attributes
    ----------
    image_voxel_size, model_voxel_size
        ``(z, y, x)`` nm, or ``None`` when unknown.
    target_voxel_size
        The grid the model works on: the model's size on resampled axes, the image's elsewhere
        (``None`` when the image's size is unknown).
    resample
        Whether any axis is resampled.
    reason
        One line saying why (or why not).
    unit
        ``"nm"``; ``"px"`` for a plan made from a zoom (:func:`plan_zoom`) where a voxel size
        is unknown: the image's size is then ``(1, 1, 1)`` pixels and no size is in nm.
    """

    image_voxel_size: VoxelSize | None
    model_voxel_size: VoxelSize | None
    target_voxel_size: VoxelSize | None
    resample: bool
    reason: str
    unit: str = "nm"

    @property
    def zoom(self) -> tuple[float, float, float]:
        """Target voxels per image voxel along each axis (1 where nothing is resampled)."""
        if not self.resample:
            return (1.0, 1.0, 1.0)
        return tuple(i / t for i, t in zip(self.image_voxel_size, self.target_voxel_size))  # type: ignore[return-value]

    def target_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of a ``(z, y, x)`` volume of ``shape`` on the target grid."""
        return tuple(max(1, int(round(n * z))) for n, z in zip(shape, self.zoom))

    def to_dict(self) -> dict[str, Any]:
        return {"image_voxel_size": _plain(self.image_voxel_size), "model_voxel_size": _plain(self.model_voxel_size),
                "target_voxel_size": _plain(self.target_voxel_size), "resample": self.resample,
                "zoom": list(self.zoom), "reason": self.reason, "unit": self.unit}


def _plain(vs: Sequence[float] | None) -> list[float] | None:
    return [float(v) for v in vs] if vs is not None else None


# ---------------------------------------------------------------------------------------------
def voxel_size_of(model: Any) -> VoxelSize | None:
    """The voxel size ``(z, y, x)`` nm a model, checkpoint or encoder was trained at, if recorded.

    ``model`` may be a built model (``.info``), a :class:`~napari_emseg.models.info.ModelInfo`,
    an :class:`~napari_emseg.models.registry.EncoderEntry`, a checkpoint path (only its header is
    read), a catalogue name (nothing is downloaded), or a voxel size itself.
    """
    if model is None:
        return None
    if isinstance(model, (tuple, list)) and all(isinstance(v, (int, float)) for v in model):
        return _triple(model)
    info = getattr(model, "info", model)
    if hasattr(info, "voxel_size"):
        return _triple(info.voxel_size)
    if isinstance(model, (str, os.PathLike)):
        from .models.errors import ModelError

        path = os.fspath(model)
        try:
            if os.path.isfile(path):
                from .models.checkpoint import load_checkpoint

                ckpt = load_checkpoint(path, tensors=False)
                return _triple(ckpt.info.voxel_size or ckpt.card.get("voxel_size"))
            from .models.registry import get_encoder

            return _triple(get_encoder(path).voxel_size)
        except ModelError:
            return None
    return None


def zoom_of(model: Any) -> VoxelSize | None:
    """The ``input_zoom`` a model or checkpoint records (``ModelInfo.input_zoom``), if any."""
    info = getattr(model, "info", model)
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(os.fspath(model)):
        from .models.checkpoint import load_checkpoint
        from .models.errors import ModelError

        try:
            info = load_checkpoint(os.fspath(model), tensors=False).info
        except ModelError:
            return None
    return _triple(getattr(info, "input_zoom", None))


def plan_voxel_match(
    model_voxel_size: Sequence[float] | None,
    image_voxel_size: Sequence[float] | None,
    config: VoxelMatchConfig = VoxelMatchConfig(),
    *,
    keep_axes: Sequence[int] = (),
    model_zoom: Sequence[float] | None = None,
) -> VoxelPlan:
    """Decide whether (and along which axes) an image must be resampled for a model.

    Parameters
    ----------
    model_voxel_size, image_voxel_size
        ``(z, y, x)`` nm; ``None`` when unknown (then nothing is resampled, unless ``model_zoom``).
    config
        Tolerance, on/off switch and sanity limit (:class:`VoxelMatchConfig`).
    keep_axes
        Axes never resampled (fine-tuning keeps the axis along which slices were painted).
    model_zoom
        The model's ``input_zoom``: used (:func:`plan_zoom`) when either voxel size is unknown.
    """
    mvs, ivs = _triple(model_voxel_size), _triple(image_voxel_size)

    def plan(resample: bool, reason: str, target: VoxelSize | None = ivs) -> VoxelPlan:
        return VoxelPlan(ivs, mvs, target, resample, reason)

    if not config.enabled:
        return plan(False, "voxel-size matching is off")
    zoom = _triple(model_zoom)
    if (mvs is None or ivs is None) and zoom is not None and any(abs(z - 1) > 1e-6 for z in zoom):
        return plan_zoom(zoom, ivs, keep_axes=keep_axes, reason="a voxel size is unknown: the model's input zoom")
    if mvs is None:
        return plan(False, "the model does not record its voxel size")
    if ivs is None:
        return plan(False, "the image's voxel size is unknown")
    ratios = [i / m for i, m in zip(ivs, mvs)]
    if max(max(r, 1 / r) for r in ratios) > config.max_factor:
        return plan(False, f"the sizes differ by more than {config.max_factor:g}x: the image's voxel size is "
                           "probably not set (give the real one); not resampling")
    limit = 1.0 + float(config.tolerance)
    axes = [a for a, r in enumerate(ratios) if max(r, 1 / r) > limit and a not in tuple(keep_axes)]
    if not axes:
        within = all(max(r, 1 / r) <= limit for r in ratios)
        return plan(False, f"within the {config.tolerance:.0%} tolerance" if within
                    else "only kept axes differ; not resampling")
    target = tuple(mvs[a] if a in axes else ivs[a] for a in range(3))
    zoom = " x ".join(f"{i / t:.3g}" for i, t in zip(ivs, target))
    return plan(True, f"resampling by {zoom} (z x y x x) to the model's grid", target)  # type: ignore[arg-type]


def plan_zoom(zoom: Sequence[float], image_voxel_size: Sequence[float] | None = None, *,
              keep_axes: Sequence[int] = (), reason: str = "") -> VoxelPlan:
    """A plan that resamples by ``zoom`` (target voxels per image voxel, ``(z, y, x)``).

    With the image's voxel size it is in nm (the target is the image's size divided by the
    zoom); without, in pixels (``unit="px"``: the image is ``(1, 1, 1)``). ``keep_axes`` keep
    zoom 1; ``reason`` leads the plan's one-line reason.
    """
    z = tuple(1.0 if a in tuple(keep_axes) else float(v) for a, v in enumerate(_triple(zoom)))
    ivs = _triple(image_voxel_size)
    unit = "nm" if ivs is not None else "px"
    source = ivs if ivs is not None else (1.0, 1.0, 1.0)
    target = tuple(s / f for s, f in zip(source, z))
    text = " x ".join(f"{f:.3g}" for f in z)
    resample = any(abs(f - 1) > 1e-6 for f in z)
    return VoxelPlan(source, None, target if resample else source, resample,  # type: ignore[arg-type]
                     f"{reason}: resampling by {text} (z x y x x)" if resample else f"{reason}: zoom 1", unit)


def describe_voxel_sizes(model: Any, image_voxel_size: Sequence[float] | None,
                         config: VoxelMatchConfig = VoxelMatchConfig()) -> str:
    """Both voxel sizes side by side and what will be done, for a widget label or a log line.

    >>> describe_voxel_sizes((8, 8, 8), (16, 16, 16))
    'model 8 x 8 x 8 nm | image 16 x 16 x 16 nm: resampling by 2 x 2 x 2 (z x y x x) to the model's grid'
    """
    plan = plan_voxel_match(voxel_size_of(model), image_voxel_size, config, model_zoom=zoom_of(model))
    return f"model {_fmt(plan.model_voxel_size)} | image {_fmt(plan.image_voxel_size)}: {plan.reason}"


def _fmt(vs: Sequence[float] | None) -> str:
    return " x ".join(f"{v:g}" for v in vs) + " nm" if vs is not None else "unknown"


# ---------------------------------------------------------------------------------------------
def resample(array: Any, source_voxel_size: Sequence[float], target_voxel_size: Sequence[float], *,
             order: int = 1, shape: Sequence[int] | None = None, antialias: bool = True) -> np.ndarray:
    """Resample a (small, in-memory) ``(..., z, y, x)`` array at once; see :class:`Resampled`."""
    return Resampled(array, source_voxel_size, target_voxel_size, order=order, shape=shape, antialias=antialias)[...]


def resample_labels(labels: Any, source_voxel_size: Sequence[float], target_voxel_size: Sequence[float], *,
                    shape: Sequence[int] | None = None) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume (ids are never mixed)."""
    return resample(labels, source_voxel_size, target_voxel_size, order=0, shape=shape)


def match_voxel_size(image: Any, model: Any, image_voxel_size: Sequence[float] | None = None,
                     config: VoxelMatchConfig = VoxelMatchConfig(), *, log: bool = True) -> tuple[Any, VoxelPlan]:
    """``image`` as the model should see it, and the plan: a lazy :class:`Resampled` view on the
    model's grid when the sizes differ beyond the tolerance, else ``image`` itself.

    Parameters
    ----------
    image
        ``(z, y, x)`` array-like or :class:`~napari_emseg.io.Volume` (its voxel size is used
        when ``image_voxel_size`` is not given and it is known).
    model
        Anything :func:`voxel_size_of` takes.
    log
        Log a warning with both sizes when resampling (and when the sizes differ but cannot be
        matched).
    """
    from .io import Volume

    if isinstance(image, Volume):
        if image_voxel_size is None and image.voxel_size_known:
            image_voxel_size = image.voxel_size
        image = image.data
    plan = plan_voxel_match(voxel_size_of(model), image_voxel_size, config, model_zoom=zoom_of(model))
    if log:
        log_plan(plan)
    if not plan.resample:
        return image, plan
    return Resampled(image, plan.image_voxel_size, plan.target_voxel_size, order=1,
                     antialias=config.antialias), plan


def log_plan(plan: VoxelPlan, then: str = "results are resampled back to the image's grid") -> None:
    """Log what a plan does: a warning with both sizes (and ``then``) when they differ beyond the tolerance."""
    sizes = f"model trained at {_fmt(plan.model_voxel_size)}, image at {_fmt(plan.image_voxel_size)}"
    if plan.unit == "px":
        sizes = "voxel size unknown, sizes in pixels"
    if plan.resample:
        logger.warning("voxel sizes differ (%s): %s; %s", sizes, plan.reason, then)
    elif (plan.model_voxel_size is not None and plan.image_voxel_size is not None and "tolerance" not in plan.reason
          and any(abs(i / m - 1) > 0.01 for i, m in zip(plan.image_voxel_size, plan.model_voxel_size))):
        logger.warning("voxel sizes differ (%s): %s", sizes, plan.reason)
    else:
        logger.info("voxel sizes: %s: %s", sizes, plan.reason)


def add_voxel_match_arguments(parser: Any) -> None:
    """``--no-voxel-match`` and ``--voxel-tolerance`` for a CLI subcommand."""
    parser.add_argument("--no-voxel-match", action="store_true",
                        help="never resample the image to the model's (or encoder's) voxel size")
    parser.add_argument("--voxel-tolerance", type=float, default=None, metavar="FRACTION",
                        help="resample axes whose voxel size differs from the model's by more than this "
                             "fraction (default 0.2)")


def voxel_match_from_args(args: Any, base: VoxelMatchConfig = VoxelMatchConfig()) -> VoxelMatchConfig:
    """``base`` changed as :func:`add_voxel_match_arguments`' flags say."""
    changes: dict[str, Any] = {"enabled": False} if getattr(args, "no_voxel_match", False) else {}
    if getattr(args, "voxel_tolerance", None) is not None:
        changes["tolerance"] = float(args.voxel_tolerance)
    return base.replace(**changes) if changes else base

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
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config

__all__ = [
    "VoxelMatchConfig",
    "VoxelPlan",
    "Resampled",
    "voxel_size_of",
    "plan_voxel_match",
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

VoxelSize = tuple[float, float, float]

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
    """

    image_voxel_size: VoxelSize | None
    model_voxel_size: VoxelSize | None
    target_voxel_size: VoxelSize | None
    resample: bool
    reason: str

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
                "zoom": list(self.zoom), "reason": self.reason}


def _plain(vs: Sequence[float] | None) -> list[float] | None:
    return [float(v) for v in vs] if vs is not None else None


def _triple(vs: Any) -> VoxelSize | None:
    if vs is None:
        return None
    vals = [float(v) for v in vs]
    if len(vals) == 2:
        vals = [1.0, *vals]
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    return (vals[0], vals[1], vals[2])


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


def plan_voxel_match(
    model_voxel_size: Sequence[float] | None,
    image_voxel_size: Sequence[float] | None,
    config: VoxelMatchConfig = VoxelMatchConfig(),
    *,
    keep_axes: Sequence[int] = (),
) -> VoxelPlan:
    """Decide whether (and along which axes) an image must be resampled for a model.

    Parameters
    ----------
    model_voxel_size, image_voxel_size
        ``(z, y, x)`` nm; ``None`` when unknown (then nothing is resampled).
    config
        Tolerance, on/off switch and sanity limit (:class:`VoxelMatchConfig`).
    keep_axes
        Axes never resampled (fine-tuning keeps the axis along which slices were painted).
    """
    mvs, ivs = _triple(model_voxel_size), _triple(image_voxel_size)

    def plan(resample: bool, reason: str, target: VoxelSize | None = ivs) -> VoxelPlan:
        return VoxelPlan(ivs, mvs, target, resample, reason)

    if not config.enabled:
        return plan(False, "voxel-size matching is off")
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


def describe_voxel_sizes(model: Any, image_voxel_size: Sequence[float] | None,
                         config: VoxelMatchConfig = VoxelMatchConfig()) -> str:
    """Both voxel sizes side by side and what will be done, for a widget label or a log line.

    >>> describe_voxel_sizes((8, 8, 8), (16, 16, 16))
    'model 8 x 8 x 8 nm | image 16 x 16 x 16 nm: resampling by 2 x 2 x 2 (z x y x x) to the model's grid'
    """
    plan = plan_voxel_match(voxel_size_of(model), image_voxel_size, config)
    return f"model {_fmt(plan.model_voxel_size)} | image {_fmt(plan.image_voxel_size)}: {plan.reason}"


def _fmt(vs: Sequence[float] | None) -> str:
    return " x ".join(f"{v:g}" for v in vs) + " nm" if vs is not None else "unknown"


# ---------------------------------------------------------------------------------------------
class Resampled:
    """A lazy, blockwise-resampled view of a ``(..., z, y, x)`` array-like.

    Parameters
    ----------
    source
        Numpy, dask, zarr, h5py or any array-like with ``shape``, ``dtype`` and slicing; leading
        axes (e.g. channels) are passed through.
    source_voxel_size, target_voxel_size
        ``(z, y, x)`` nm of the source and of the view.
    order
        1: linear (intensities, probability maps); 0: nearest neighbour (labels).
    shape
        Spatial shape of the view; default ``round(n * source / target)`` per axis (give the
        original shape when resampling back).
    antialias
        Gaussian filter along axes that shrink (linear only).

    The view has ``shape``, ``dtype`` and ``ndim`` and is read with ``view[slices]`` (numpy
    result); :meth:`to_dask` wraps it for ``dask``/``zarr`` writers.
    """

    def __init__(self, source: Any, source_voxel_size: Sequence[float], target_voxel_size: Sequence[float],
                 *, order: int = 1, shape: Sequence[int] | None = None, antialias: bool = True) -> None:
        if order not in (0, 1):
            raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
        self.source = source
        src_shape = tuple(int(s) for s in source.shape)
        if len(src_shape) < 3:
            raise ValueError(f"expected (..., z, y, x), got shape {src_shape}")
        self.lead = len(src_shape) - 3
        svs, tvs = _triple(source_voxel_size), _triple(target_voxel_size)
        if svs is None or tvs is None:
            raise ValueError(f"voxel sizes must be three positive numbers, got {source_voxel_size}, {target_voxel_size}")
        self.source_voxel_size, self.target_voxel_size = svs, tvs
        self.ratio = tuple(t / s for s, t in zip(svs, tvs))  # source voxels per target voxel
        spatial = src_shape[self.lead:]
        out = tuple(int(n) for n in shape) if shape is not None else tuple(
            max(1, int(round(n / r))) for n, r in zip(spatial, self.ratio))
        self.order, self.antialias = order, bool(antialias)
        self.shape = (*src_shape[: self.lead], *out)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        self._src_spatial = spatial

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def to_dask(self, chunks: Any) -> Any:
        """The view as a dask array with ``chunks`` (each chunk reads only its source region)."""
        import dask.array as da

        return da.from_array(self, chunks=chunks, meta=np.empty((0,) * self.ndim, self.dtype),
                             name=f"resampled-{uuid.uuid4().hex}", asarray=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, squeeze = _normalise_key(key, self.shape)
        out_shape = tuple(s.stop - s.start for s in slices)
        if 0 in out_shape:
            return np.empty(tuple(n for n, q in zip(out_shape, squeeze) if not q), self.dtype)
        axes = [_axis_plan(s.start, s.stop, n, r, self.order, self.antialias)
                for s, n, r in zip(slices[self.lead:], self._src_spatial, self.ratio)]
        region = (*slices[: self.lead], *(slice(p.lo, p.hi) for p in axes))
        data = _read(self.source, region)
        if self.order == 1:
            data = data.astype(np.float32, copy=False)
        for k, p in enumerate(axes):
            data = p.apply(data, self.lead + k)
        if self.order == 1 and data.dtype != self.dtype:
            data = _cast(data, self.dtype)
        index = tuple(0 if q else slice(None) for q in squeeze)
        return np.ascontiguousarray(data[index])


@dataclass(frozen=True)
class _AxisPlan:
    """Source range ``[lo, hi)`` to read along one axis and how to turn it into the output."""

    lo: int
    hi: int
    i0: np.ndarray
    i1: np.ndarray | None
    w: np.ndarray | None
    sigma: float

    def apply(self, data: np.ndarray, axis: int) -> np.ndarray:
        if self.sigma > 0:
            from scipy.ndimage import gaussian_filter1d

            data = gaussian_filter1d(data, self.sigma, axis=axis, mode="nearest", truncate=4.0)
        a = np.take(data, self.i0, axis=axis)
        if self.i1 is None:
            return a
        shape = [1] * data.ndim
        shape[axis] = -1
        w = self.w.reshape(shape)
        b = np.take(data, self.i1, axis=axis)
        return a + (b - a) * w


def _axis_plan(start: int, stop: int, n: int, ratio: float, order: int, antialias: bool) -> _AxisPlan:
    j = np.arange(start, stop, dtype=np.float64)
    if order == 0:
        idx = np.clip(np.floor((j + 0.5) * ratio), 0, n - 1).astype(np.int64)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return _AxisPlan(lo, hi, idx - lo, None, None, 0.0)
    c = (j + 0.5) * ratio - 0.5
    f = np.floor(c)
    w = (c - f).astype(np.float32)
    i0 = np.clip(f, 0, n - 1).astype(np.int64)
    i1 = np.clip(f + 1, 0, n - 1).astype(np.int64)
    sigma = (ratio - 1.0) / 2.0 if antialias and ratio > 1.0 + 1e-6 else 0.0
    halo = int(4.0 * sigma + 0.5) if sigma else 0  # scipy's kernel radius at truncate=4
    lo, hi = max(0, int(i0.min()) - halo), min(n, int(i1.max()) + 1 + halo)
    return _AxisPlan(lo, hi, i0 - lo, i1 - lo, w, sigma)


def _normalise_key(key: Any, shape: tuple[int, ...]) -> tuple[list[slice], list[bool]]:
    """``key`` as one unit-step slice per axis, and which axes an integer index removes."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    slices, squeeze = [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} out of range for size {n}")
            slices.append(slice(i, i + 1))
            squeeze.append(True)
        elif isinstance(k, slice):
            a, b, step = k.indices(n)
            if step != 1:
                raise IndexError("resampled views take unit-step slices only")
            slices.append(slice(a, max(a, b)))
            squeeze.append(False)
        else:
            raise IndexError(f"resampled views take integers and slices, got {type(k).__name__}")
    return slices, squeeze


def _read(source: Any, region: tuple[slice, ...]) -> np.ndarray:
    part = source[region]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part)


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return data >= 0.5
    return data.astype(dtype)


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
    plan = plan_voxel_match(voxel_size_of(model), image_voxel_size, config)
    if log:
        log_plan(plan)
    if not plan.resample:
        return image, plan
    return Resampled(image, plan.image_voxel_size, plan.target_voxel_size, order=1,
                     antialias=config.antialias), plan


def log_plan(plan: VoxelPlan, then: str = "results are resampled back to the image's grid") -> None:
    """Log what a plan does: a warning with both sizes (and ``then``) when they differ beyond the tolerance."""
    sizes = f"model trained at {_fmt(plan.model_voxel_size)}, image at {_fmt(plan.image_voxel_size)}"
    if plan.resample:
        logger.warning("voxel sizes differ (%s): %s; %s", sizes, plan.reason, then)
    elif plan.model_voxel_size is not None and plan.image_voxel_size is not None and "tolerance" not in plan.reason:
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

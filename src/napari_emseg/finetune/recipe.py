"""The fine-tuning recipe's choices that depend on the task, the labels and the network.

What a painted task trains (:func:`target_kind`), the target's settings (:func:`target_kwargs`),
the training patch (:func:`patch_shape`), batch and step defaults. Shared by the one-shot
:func:`~.job.fine_tune` and the live loop (:mod:`.live`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .annotations import AnnotationError

__all__ = ["target_kind", "target_kwargs", "patch_shape", "is_isotropic", "permute_planes", "crop_context", "batch_size",
           "encoder_name", "PATCH_2D", "BATCH_2D", "BATCH_3D", "PATCH_ISO", "STEPS_2D", "STEPS_3D", "UNTIL_TIME_LIMIT"]


def target_kind(cfg: Any, ann: Any) -> str:
    """What the network learns: ``cfg.target``, or for ``auto`` the task's target; neurons painted on
    isolated slices, as scribbles or along y/x learn in-plane boundaries (no z-affinity to learn)."""
    if cfg.target != "auto":
        allowed = {"neurons": {"affinities", "boundaries"}, "mitochondria": {"bcd"}, "semantic": {"semantic"}}
        if cfg.target not in allowed[cfg.task]:
            raise AnnotationError(f"task {cfg.task!r} cannot train target {cfg.target!r}; use {sorted(allowed[cfg.task])}")
        return cfg.target
    if cfg.task == "mitochondria":
        return "bcd"
    if cfg.task == "semantic":
        return "semantic"
    if ann.mode == "scribbles" or ann.isolated_slices or ann.axis not in (None, 0):
        return "boundaries"
    return "affinities"


def target_kwargs(kind: str, model: nn.Module) -> dict[str, Any]:
    """The target builder's settings the model fixes (affinity offsets, number of classes)."""
    if kind == "affinities":
        return {"offsets": tuple(model.info.offsets)}
    if kind == "semantic":
        return {"n_classes": model.info.out_channels}
    return {}


#: the 2D recipe's training patch and batch (a 3D network trains on its tile, 2 at a time)
PATCH_2D, BATCH_2D, BATCH_3D = (1, 192, 192), 8, 2
#: a 3D network on a near-isotropic volume trains on cubes
PATCH_ISO = (64, 64, 64)
#: default steps: about 10 minutes on 2 CPU cores (one on a GPU) for each network
STEPS_2D, STEPS_3D = 600, 300
#: the step cap when only a time limit is given: the clock decides (a faster machine trains longer)
UNTIL_TIME_LIMIT = 10**7


def patch_shape(cfg: Any, model: nn.Module, ann: Any, layout: Any = None) -> tuple[int, int, int]:
    """The training patch: ``cfg.patch`` or the network's default, rounded up to its input multiple."""
    default = tuple(model.info.tile)
    if model.info.spatial_dims == 2:
        default = PATCH_2D
    elif layout is not None and layout.kind == "volume":
        default = PATCH_ISO  # cubic: the painted plane is also shown along y and x (permute_planes)
    patch = cfg.patch or default
    if model.info.spatial_dims == 2:
        patch = (1, *patch[1:])
    mult = model.info.input_multiple
    return tuple(max(m, -(-int(p) // m) * m) for p, m in zip(patch, mult))


def is_isotropic(voxel_size: Any) -> bool:
    """Voxel sizes within 1.5x of each other on every axis."""
    return voxel_size is not None and max(voxel_size) / min(voxel_size) < 1.5


def permute_planes(cfg: Any, voxel_size: Any, layout: Any, patch: tuple[int, ...], *,
                   zoom: tuple[float, ...] | None = None) -> bool:
    """Show the painted plane along y and x too: ``cfg.permute_planes`` ``"on"``, or ``"auto"``
    when the training grid is near-isotropic.

    A 3D network's cubic patches are transposed; a 2D network also trains on planes cut across
    the painted slices (xz and yz, labelled along the rows where they cross them), so that
    ortho-plane inference meets planes it has seen. ``voxel_size`` is the grid's (nm; ``None``:
    unknown, then the layout decides); ``zoom`` is a resampling of the crop not counted in it
    (a working grid chosen without voxel sizes, which zooms y and x only).
    """
    if cfg.permute_planes != "auto":
        return cfg.permute_planes == "on"
    grid = voxel_size
    if zoom is not None and (voxel_size is not None or layout.kind == "volume"):
        grid = tuple(v / z for v, z in zip(voxel_size or (1.0, 1.0, 1.0), zoom))
    near_isotropic = is_isotropic(grid) or (grid is None and layout.kind == "volume")
    return near_isotropic and (len(set(patch)) == 1 or (patch[0] == 1 and patch[1] == patch[2]))


#: the most voxels a 2D network's training crop may grow to for the z-context of cross planes
#: (the crop holds 13 bytes a voxel: float32 image, int64 labels, the mask: about 1.6 GiB)
CROSS_CONTEXT_VOXELS = 2**27


def crop_context(patch: tuple[int, ...], *, cross: bool, box: tuple[slice, ...] | None = None,
                 shape: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    """Voxels of image kept around the painted box: half a patch on each side; for a 2D network
    that trains on cross planes also half a patch along z, as far as :data:`CROSS_CONTEXT_VOXELS`
    allows (the planes reflect at the crop's edge where it is thinner)."""
    context = [p // 2 for p in patch]
    if cross:
        cz = patch[1] // 2
        if shape is not None:  # the painted box, or one whole slice when it is not known yet
            box = box or (slice(0, 1), slice(0, shape[1]), slice(0, shape[2]))
            side = [min(n, (b.stop - b.start) + 2 * c) for b, c, n in zip(box, context, shape)]
            plane = side[1] * side[2]
            cz = max(0, min(cz, (CROSS_CONTEXT_VOXELS // max(plane, 1) - side[0]) // 2))
        context[0] = cz
    return tuple(context)  # type: ignore[return-value]


def batch_size(cfg: Any, model: nn.Module) -> int:
    """``cfg.batch_size``, or the recipe's batch for the network's dimensionality."""
    return cfg.batch_size or (BATCH_2D if model.info.spatial_dims == 2 else BATCH_3D)


def encoder_name(encoder: Any) -> str:
    """The encoder's name for the model card."""
    return Path(str(encoder)).name if encoder is not None else "scratch"

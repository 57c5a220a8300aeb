"""Tiled prediction at the model's voxel size, with the maps written on the image's grid.

See :mod:`napari_emseg.resample` for the lazy resampling this builds on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Job, Progress
from ..resample import MODEL_GRID_SUFFIX, Resampled, VoxelMatchConfig, match_voxel_size

__all__ = ["predict_matched"]


def predict_matched(
    model: Any,
    image: Any,
    out: Any = None,
    config: Any = None,
    match: VoxelMatchConfig = VoxelMatchConfig(),
    *,
    voxel_size: Sequence[float] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Job[Any]:
    """:func:`~napari_emseg.inference.predict_tiled` at the model's voxel size, maps on the image's grid.

    Within the tolerance (or with matching off, or a size unknown) this is ``predict_tiled``.
    Otherwise the model predicts on a lazy :class:`Resampled` view of the image; the maps go to
    ``OUT_model_grid`` next to a path ``out`` (resumable; in memory otherwise) and are
    resampled back (linear) into ``out`` block by block (``stage="resample"`` progress). The
    output's attributes are the model-grid ones with the image's ``resolution`` and a
    ``voxel_size_match`` record. Parameters as ``predict_tiled``, plus ``match``. An existing
    ``out`` is replaced only when its model-grid maps are this run's, or with ``overwrite``.
    """
    from ..io import Volume
    from .config import InferenceConfig
    from .predict import predict_tiled

    config = config if config is not None else InferenceConfig()
    if isinstance(image, Volume) and voxel_size is None and image.voxel_size_known:
        voxel_size = image.voxel_size
    view, plan = match_voxel_size(image, model, voxel_size, match)
    if not plan.resample:
        return (yield from predict_tiled(model, image, out, config, voxel_size=voxel_size, attrs=attrs,
                                         overwrite=overwrite))
    data = image.data if isinstance(image, Volume) else image
    extra = {**(attrs or {}), "voxel_size_match": plan.to_dict()}
    grid_out = f"{os.fspath(out).rstrip('/')}{MODEL_GRID_SUFFIX}" if isinstance(out, (str, os.PathLike)) else None
    if isinstance(out, (str, os.PathLike)) and Path(out).exists() and not overwrite:
        _check_replaceable_maps(Path(out), grid_out)
    nm = plan.unit == "nm"  # a plan from the model's input zoom on an image of unknown size is in pixels
    grid = yield from predict_tiled(model, view, grid_out, config, voxel_size=plan.target_voxel_size if nm else None,
                                    attrs=extra, overwrite=overwrite)
    back = Resampled(grid, plan.target_voxel_size, plan.image_voxel_size, order=1,
                     shape=tuple(data.shape)[-3:], antialias=match.antialias)
    block = tuple(min(int(b), int(n)) for b, n in zip(config.block, back.shape[1:]))
    meta = {k: v for k, v in dict(getattr(grid, "attrs", {}) or {}).items() if k != "emseg_inference"}
    from .._outputs import owner_attrs

    meta.update(owner_attrs())
    meta.update(extra, complete=True, model_grid=grid_out and os.path.basename(grid_out))
    if nm:
        meta.update(resolution=list(plan.image_voxel_size), voxel_size=list(plan.image_voxel_size),
                    voxel_size_known=True)
    else:
        for key in ("resolution", "voxel_size", "voxel_size_known"):
            meta.pop(key, None)
    if not isinstance(out, (str, os.PathLike)):
        target = np.zeros(back.shape, back.dtype) if out is None else out
        yield from _fill(target, back, block)
        return target
    import zarr

    from .._atomic import atomic_path
    from ..io import ensure_parent_groups, jsonable

    ensure_parent_groups(Path(out), config.zarr_format)
    with atomic_path(out) as tmp:
        arr = zarr.create_array(store=str(tmp), shape=back.shape, chunks=(back.shape[0], *block), dtype=back.dtype,
                                zarr_format=config.zarr_format, fill_value=0)
        arr.attrs.update(jsonable(meta))
        yield from _fill(arr, back, block)
    return zarr.open_array(str(out), mode="r")


def _check_replaceable_maps(out: Path, grid_out: str) -> None:
    """``out`` may be remade from the model-grid maps only when it was made from them (the
    grid's own fingerprint check then decides); anything else needs ``overwrite``."""
    from .._outputs import guard_foreign
    from .output import OutputError

    guard_foreign(out, option="output")
    if not Path(grid_out).exists():
        raise OutputError(f"{out}: holds predictions of an earlier run (made on another grid); pass --overwrite "
                          "to replace them, or choose another --out")


def _fill(target: Any, view: Resampled, block: Sequence[int]) -> Job[None]:
    """Copy ``view`` into ``target`` one block of one channel at a time (bounded memory)."""
    from itertools import product

    starts = list(product(*[range(0, n, b) for n, b in zip(view.shape[1:], block)]))
    for i, st in enumerate(starts):
        spatial = tuple(slice(s, min(s + b, n)) for s, b, n in zip(st, block, view.shape[1:]))
        out = np.stack([view[(c, *spatial)] for c in range(view.shape[0])])  # the float work per channel
        target[(slice(None), *spatial)] = out
        yield Progress(i + 1, len(starts), "resample", "maps back to the image's grid")

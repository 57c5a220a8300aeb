"""Blockwise segmentation on dask.distributed: volumes beyond one machine.

Prediction and instance extraction run block by block as dask tasks (a ``LocalCluster`` or any
scheduler); objects are stitched into globally consistent ids: mitochondria (and semantic
instances) by matching overlapping objects across block faces, neurons by agglomerating the
fragment region graph of the whole volume, faces included, with waterz's mean-affinity score.
Finished blocks are recorded, so a re-run resumes. See ``docs/scale-out.md``.

Names are imported on first use: ``import napari_emseg.blockwise`` loads neither dask.distributed
nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BlockwiseConfig": "config",
    "segment_blockwise_job": "segment",
    "BlockwiseSegmentation": "segment",
    "instances_blockwise_job": "instances",
    "predict_blockwise_job": "predict",
    "dask_client": "cluster",
    "VolumeRef": "cluster",
    "mean_affinity_agglomeration": "graph",
    "block_grid": "geometry",
    "Box": "geometry",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)

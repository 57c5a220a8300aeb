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

from .._lazy import lazy_attributes

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


__getattr__, __dir__, __all__ = lazy_attributes(__name__, _LAZY)

"""Self-supervised pretraining (MAE-3D, MS-Con, RETINA, masked 2D inpainting) and the training loop fine-tuning shares.

Importing this package is light (no torch); names resolve on first use::

    from napari_emseg.pretrain import TrainConfig, train, pretrain, default_job

* :mod:`.trainer` -- :class:`TrainConfig`, :func:`train` (the shared loop), :class:`TrainResult`;
* :mod:`.methods` -- :func:`pretrain` (one call per run), :func:`default_job`, :func:`load_job`;
* :mod:`.mae3d`, :mod:`.mscon`, :mod:`.retina`, :mod:`.masked2d` -- the objectives and their job configs;
* :mod:`.reconstruction` -- what the 2D reconstruction objectives (RETINA, masked 2D) share;
* :mod:`.state` -- training checkpoints (resume); :mod:`.distributed` -- torchrun/DDP helpers.

See ``docs/pretraining.md``.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "TrainingError": "trainer",
    "train": "trainer",
    "build_optimizer": "trainer",
    "lr_factor": "trainer",
    "pretrain": "methods",
    "PretrainResult": "methods",
    "default_job": "methods",
    "load_job": "methods",
    "job_class": "methods",
    "export_encoder": "methods",
    "MAE3D": "mae3d",
    "MAE3DConfig": "mae3d",
    "MAE3DJob": "mae3d",
    "MSCon": "mscon",
    "MSConConfig": "mscon",
    "MSConJob": "mscon",
    "Masked2D": "masked2d",
    "Masked2DConfig": "masked2d",
    "Masked2DJob": "masked2d",
    "Retina": "retina",
    "RetinaConfig": "retina",
    "RetinaJob": "retina",
    "CheckpointError": "state",
    "latest_checkpoint": "state",
    "load_training_checkpoint": "state",
}


__getattr__, __dir__, __all__ = lazy_attributes(__name__, _LAZY)

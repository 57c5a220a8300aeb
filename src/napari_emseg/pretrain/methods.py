"""One call per pretraining run: check the inputs, train with the shared loop, export the encoder.

:func:`pretrain` is what ``napari-emseg-pretrain`` runs (and what a notebook or a server script
calls): it opens and checks the data *before* any training, builds the method's objective and
the patch stream, runs :func:`~napari_emseg.pretrain.trainer.train`, and on rank 0 writes the
encoder as a catalogue checkpoint with its model card
(:func:`~napari_emseg.models.checkpoint.save_checkpoint`), ready for the encoder picker.

>>> job = default_job("mae3d").override(["train.max_steps=100", "data.patch=4,64,64"])
>>> job.train.max_steps, job.data.patch
(100, (4, 64, 64))
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .._lock import locks_output
from .._signals import deferred_sigterm
from ..config import Config, ConfigError
from ..data.sampler import PatchBatches, VolumeSource, make_loader, open_sources
from ..progress import Job
from . import mae3d, masked2d, mscon, retina
from .distributed import dist_env
from .state import CheckpointError, latest_checkpoint, list_checkpoints, read_meta
from .trainer import TrainResult, train

__all__ = ["METHODS", "PretrainResult", "job_class", "default_job", "load_job", "check_resume", "pretrain",
           "export_encoder", "install_encoder"]

logger = logging.getLogger(__name__)

METHODS: dict[str, ModuleType] = {"mae3d": mae3d, "mscon": mscon, "retina": retina, "masked2d": masked2d}
_JOBS: dict[str, type[Config]] = {"mae3d": mae3d.MAE3DJob, "mscon": mscon.MSConJob, "retina": retina.RetinaJob,
                                  "masked2d": masked2d.Masked2DJob}
_FAMILY = {"mae3d": "MAE-3D (Cheng et al. 2023)", "mscon": "MS-Con (Chen et al. 2024)",
           "retina": "RETINA (Xing et al. 2025)", "masked2d": "masked-patch inpainting (Models Genesis / SimMIM style)"}
#: methods that train on 2D slices (``data.patch`` 1,Y,X)
_SLICES = ("retina", "masked2d")


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the training result and the exported encoder (rank 0)."""

    train: TrainResult
    encoder: Path | None
    job: Config
    data: list[str] = field(default_factory=list)


def job_class(method: str) -> type[Config]:
    """The job config class of ``method`` (``"mae3d"``, ``"mscon"`` or ``"retina"``)."""
    if method not in _JOBS:
        raise ConfigError(f"pretraining method {method!r}: choose one of {sorted(_JOBS)}")
    return _JOBS[method]


def default_job(method: str) -> Config:
    """The method's job config with the paper defaults."""
    return job_class(method)()


def load_job(method: str, config: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then a YAML/JSON file, then ``"a.b=value"`` overrides."""
    cls = job_class(method)
    job = cls.from_file(config) if config else cls()
    if getattr(job, "method", method) != method:
        raise ConfigError(f"{config}: is a {job.method!r} config, not {method!r}")
    return job.override(list(overrides))


def check_resume(out_dir: str | os.PathLike, method: str, resume: bool) -> None:
    """Refuse to mix runs: ``resume`` needs a checkpoint of the same method, a new run an empty folder."""
    ckpts = Path(out_dir) / "checkpoints"
    if not resume:
        found = list_checkpoints(ckpts)
        if found:
            raise CheckpointError(f"{found[-1][1]}: {out_dir} already holds a training run; pass --resume to "
                                  "continue it, or choose another --out folder")
        return
    latest = latest_checkpoint(ckpts)
    if latest is None:
        return
    path, state = latest
    kind = read_meta(state).get("kind")
    if kind != f"pretrain-{method}":
        raise CheckpointError(f"{path}: was written by a {kind!r} run, not pretrain-{method}; resume it with "
                              "the same --method or choose another --out folder")


def _check_patch(job: Any, objective: torch.nn.Module) -> None:
    multiple = tuple(getattr(objective, "input_multiple", None) or objective.export_model().input_multiple)
    if len(job.data.patch) != 3:
        raise ConfigError(f"data.patch {job.data.patch}: give three sizes z,y,x")
    patch = tuple(job.data.patch)
    if job.method in _SLICES:
        multiple, patch = multiple[-2:], patch[-2:]
        if job.data.patch[0] != 1:
            raise ConfigError(f"data.patch {job.data.patch}: {job.method} trains on 2D slices; use 1,Y,X "
                              "(e.g. 1,128,128)")
    if any(p % m for p, m in zip(patch, multiple)):
        raise ConfigError(f"data.patch {job.data.patch} must be a multiple of {multiple} for this network; "
                          f"e.g. --set data.patch={','.join(str(max(m, p // m * m)) for p, m in zip(job.data.patch[-len(multiple):], multiple))}")


@locks_output("out_dir", when=lambda: dist_env().is_main)
def pretrain(job: Any, data: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, resume: bool = False,
             export: bool = True, card: Mapping[str, Any] | None = None, name: str | None = None,
             command: str | None = None) -> Job[PretrainResult]:
    """Pretrain with ``job`` (a method's job config) on ``data``; a generator job.

    Parameters
    ----------
    job
        :class:`~.mae3d.MAE3DJob`, :class:`~.mscon.MSConJob` or :class:`~.retina.RetinaJob`.
    data
        Volumes :func:`~napari_emseg.io.open_volume` reads; each batch draws one of them with
        equal probability.
    out_dir
        Training checkpoints, TensorBoard logs and the exported ``<name>.safetensors``. The run
        (rank 0) holds ``OUT_DIR.lock`` (:mod:`napari_emseg._lock`): a second run into the same
        folder is refused; its writability and free space are checked before training.
    resume
        Continue the run in ``out_dir`` exactly.
    export, card, name, command
        Write the encoder (rank 0) with this model card (merged over the generated one), file
        name and reproducing command.
    """
    method = job.method
    module = METHODS[method]
    paths = [os.fspath(p) for p in data]
    sources = open_sources(paths, job.data)  # every data error before any training
    check_resume(out_dir, method, resume)  # every rank, so none waits for a rank that failed
    from .._outputs import check_not_input, check_output_space

    check_not_input([Path(out_dir) / "checkpoints", Path(out_dir) / "tensorboard"], paths)
    torch.manual_seed(job.train.seed)  # same initial weights on every rank
    objective = module.build_objective(job)
    _check_patch(job, objective)
    n_weights = sum(p.numel() for p in objective.parameters())  # a checkpoint: weights and two Adam moments
    check_output_space(out_dir, 4 * 4 * n_weights + 2**20, what="the training checkpoints")
    rank = dist_env().rank
    stream = PatchBatches(sources, job.data, module.make_transform(job), rank=rank)
    pin = torch.cuda.is_available() and job.train.device != "cpu"

    def batches(start: int):
        return make_loader(stream.starting_at(start), job.data.workers, pin_memory=pin)

    meta = {"kind": f"pretrain-{method}", "job": job.to_dict(), "data": paths}
    result = yield from train(objective, batches, job.train, out_dir, resume=resume, meta=meta,
                              stage=f"pretrain {method}")
    encoder = None
    if export and rank == 0 and result.step > 0:
        with deferred_sigterm():  # stopped by SIGTERM: the encoder is still exported
            encoder = export_encoder(objective, job, sources, result, Path(out_dir), card=card, name=name,
                                     command=command)
    return PretrainResult(result, encoder, job, paths)


def export_encoder(objective: Any, job: Any, sources: Sequence[VolumeSource], result: TrainResult,
                   out_dir: Path, *, card: Mapping[str, Any] | None = None, name: str | None = None,
                   command: str | None = None) -> Path:
    """Save ``objective.export_model()`` as a catalogue checkpoint with a model card."""
    from ..models.checkpoint import save_checkpoint

    model = objective.export_model()
    cfg = model.config
    name = name or f"{job.method}-{cfg.arch}" + (f"-{cfg.vit_size}" if cfg.arch in ("vit3d", "transunet2d") else "")
    voxels = [s.voxel_size for s in sources if s.voxel_size != (1.0, 1.0, 1.0)]
    # a slice-wise inpainting U-Net is used at the data's own pixel size (no resampling to the pretraining's)
    voxel = None if job.method == "masked2d" else next(iter(voxels), None)
    tile = tuple(max(m, p // m * m) for p, m in zip(job.data.patch, model.info.input_multiple))
    model.info = model.info.replace(tile=tile, voxel_size=voxel, norm=job.data.norm)
    full = {
        "name": name,
        "family": _describe(cfg),
        "method": _FAMILY[job.method],
        "data": ", ".join(Path(s.path).name for s in sources),
        "licence": "as the training data's terms",
        "description": f"{_FAMILY[job.method]} pretraining of a {_describe(cfg)}",
        "steps": result.step,
        "final_loss": result.metrics.get("loss"),
        "final_metrics": result.metrics,
        "wall_time_s": round(result.elapsed_s, 1),
        "stopped": result.stopped,
        "tile": list(tile),
        "voxel_size": list(voxel) if voxel else None,
        "command": command or " ".join(sys.argv),
        "training": {"data": [s.path for s in sources], "patch": list(job.data.patch),
                     "batch_size": job.data.batch_size, "optimizer": job.train.optimizer, "lr": job.train.lr,
                     "voxel_sizes": [list(v) for v in voxels]},
        "loss_curve": loss_curve(result.history),
        **(objective.card() if callable(getattr(objective, "card", None)) else {}),
        **dict(card or {}),
    }
    path = save_checkpoint(out_dir / f"{name}.safetensors", model, job=job, card=full)
    logger.info("encoder written to %s", path)
    return path


def loss_curve(history: Sequence[Mapping[str, float]], points: int = 20) -> dict[str, float]:
    """``{step: loss}`` at about ``points`` evenly spaced logged steps (the first and last included)."""
    rows = [r for r in history if "loss" in r and "step" in r]
    if not rows:
        return {}
    pick = sorted({round(i * (len(rows) - 1) / max(1, points - 1)) for i in range(points)})
    return {str(int(rows[i]["step"])): round(float(rows[i]["loss"]), 5) for i in pick}


def _describe(cfg: Any) -> str:
    if cfg.arch == "vit3d":
        return f"ViT-3D {cfg.vit_size}, patch {'x'.join(map(str, cfg.patch_size))}"
    if cfg.arch == "resunet":
        return f"ResUNet-3D widths {'/'.join(map(str, cfg.widths))}"
    if cfg.arch == "unet2d":
        return f"U-Net-2D (MONAI BasicUNet) widths {'/'.join(map(str, cfg.widths))}"
    return f"TransUNet-2D ({cfg.vit_size} transformer, stem {'/'.join(map(str, cfg.widths))})"


def install_encoder(path: str | os.PathLike) -> Path:
    """Copy an exported encoder into the catalogue's local folder (listed as ``local``)."""
    from ..models.registry import local_dir

    target = local_dir() / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return target

"""The network a fine-tune starts from, and which of its parameters train at which rate."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from .annotations import AnnotationError, Annotations

logger = logging.getLogger(__name__)

#: the inference tile recorded for a 2D network trained without an explicit patch
TILE_2D = (1, 512, 512)

#: the part of a RETINA (TransUNet) encoder its paper transfers to fine-tuning
TRANSFORMER = "encoder.transformer"


@dataclass(frozen=True)
class Transfer:
    """What a fine-tune takes from a pretrained encoder: the dotted ``part`` transplanted (it
    trains at ``lr * encoder_lr_scale``) and whether that part stays ``frozen``. Set as
    ``model.transfer`` by :func:`prepare_model`, read by :func:`freeze_and_group`."""

    part: str = "encoder"
    frozen: bool = False


def is_retina(ckpt: Any) -> bool:
    """Whether a checkpoint is a RETINA-pretrained TransUNet (not a fine-tuned one)."""
    return ckpt.config.arch == "transunet2d" and (
        ckpt.card.get("method") == "retina" or ckpt.info.target == "reconstruction")


def plan_transfer(ckpt: Any, cfg: Any) -> Transfer:
    """The :class:`Transfer` for a pretrained checkpoint and a fine-tune config.

    ``cfg.transfer`` (``"auto"`` when the config has no such field):

    * ``"auto"``: a RETINA encoder transfers its transformer layers only and keeps them frozen
      while the CNN stem, decoder and head train from scratch, as the paper does (it found
      transferring everything no better) -- unless ``cfg.freeze == "encoder"`` asks for the
      whole encoder, frozen. Every other encoder transfers whole.
    * ``"transformer"``: a TransUNet's transformer only, trained (unless ``cfg.freeze`` says).
    * ``"encoder"``: the whole encoder (stem included), trained (unless ``cfg.freeze`` says).
    """
    transfer = getattr(cfg, "transfer", "auto")
    retina = is_retina(ckpt)
    if transfer == "transformer":
        if ckpt.config.arch != "transunet2d":
            raise AnnotationError(f"transfer='transformer' needs a TransUNet (RETINA) encoder, not {ckpt.config.arch}; "
                                  "use 'encoder' or 'auto'")
        return Transfer(TRANSFORMER)
    if transfer == "auto" and retina and cfg.freeze != "encoder":
        return Transfer(TRANSFORMER, frozen=True)
    if transfer not in ("auto", "encoder"):
        raise AnnotationError(f"transfer {transfer!r}: choose 'auto', 'transformer' or 'encoder'")
    return Transfer()


def prepare_model(encoder: Any, cfg: Any, kind: str, ann: Annotations,
                  voxel_size: tuple[float, float, float] | None, dims: int | None = None) -> tuple[nn.Module, dict | None]:
    """Build the segmentation network for ``kind`` on ``encoder``.

    ``encoder`` is a built model (used as it is), a fine-tuned checkpoint of the same target
    (training continues), or an encoder name/path (a fresh head on the transplanted encoder).
    ``dims`` (2 or 3) is the network the data asks for (a residual U-Net encoder follows it; a 2D
    encoder with a 3D counterpart is inflated into it for ``dims=3``, kernels by
    ``cfg.inflate`` (:class:`~.job.FineTuneConfig`; ``"centre"`` for a config without it): see
    :mod:`napari_emseg.models.inflate`).
    Returns the model and a summary of the transplant (``None`` when nothing was pretrained).
    """
    from ..models.checkpoint import load_checkpoint, load_model
    from ..models.heads import head_info
    from ..models.registry import model_for_encoder, resolve_encoder

    n_classes = cfg.n_classes or (int(ann.labels.max()) + 1 if kind == "semantic" else 2)
    if isinstance(encoder, nn.Module):
        if getattr(encoder, "info", None) is None or encoder.info.target != kind:
            raise AnnotationError(f"the given model predicts {getattr(getattr(encoder, 'info', None), 'target', '?')}, "
                                  f"not {kind}; pass an encoder or a checkpoint trained for {kind}")
        return encoder, None  # a module as given: one learning rate for all of it, with warm-up
    src = resolve_encoder(encoder)
    if isinstance(src, (str, os.PathLike)):
        ckpt = load_checkpoint(src)
        if ckpt.info.target == kind and ckpt.info.task == cfg.task:
            if kind == "semantic" and ckpt.info.out_channels < n_classes:
                raise AnnotationError(f"the checkpoint has {ckpt.info.out_channels} classes, the labels need {n_classes}")
            logger.info("continuing to train %s", src)
            return load_model(src).train(), {"continued": str(src)}
    plan = plan_transfer(ckpt, cfg) if isinstance(src, (str, os.PathLike)) else Transfer()
    tile = ann_tile(cfg) or (TILE_2D if dims == 2 else None)
    info = head_info(kind, task=cfg.task, n_classes=n_classes, voxel_size=voxel_size, **({"tile": tile} if tile else {}))
    model, report = model_for_encoder(encoder, info, dims=dims, part=plan.part,
                                      inflate=getattr(cfg, "inflate", "centre"))
    model.train()
    if report is None:
        logger.info("training from scratch (%s)", encoder)
        return model, None
    inflation = getattr(model, "inflation", None)
    if inflation is not None:  # a 2D encoder in a 3D network: the part it filled
        plan = Transfer(inflation["part"], frozen=plan.frozen)
    if model.config.arch == "unet2d":  # transferred whole (but the head): all of it trains at lr, as a
        plan = Transfer("net", frozen=False)  # continued one-click model does
    else:
        model.transfer = plan
    summary = {"loaded": len(report.loaded), "missing": len(report.missing), "unexpected": len(report.unexpected),
               "part": plan.part, "frozen": plan.frozen, **({"inflated": inflation} if inflation else {})}
    logger.info("encoder %s: %s", encoder, summary)
    return model, summary


def ann_tile(cfg: Any) -> tuple[int, int, int] | None:
    return tuple(cfg.patch) if cfg.patch else None


def freeze_and_group(model: nn.Module, cfg: Any, pretrained: bool) -> list[dict[str, Any]]:
    """Freeze what ``cfg.freeze`` and the encoder's :class:`Transfer` (``model.transfer``) say;
    the transferred part trains at ``lr * encoder_lr_scale``, everything else at ``lr``."""
    encoder = getattr(model, "encoder", None)
    plan = getattr(model, "transfer", None) if pretrained else None
    part = model.get_submodule(plan.part) if isinstance(plan, Transfer) else encoder
    if isinstance(plan, Transfer) and plan.frozen:
        part.requires_grad_(False)
    if cfg.freeze == "encoder":
        if encoder is None:
            raise AnnotationError("this model has no encoder to freeze")
        encoder.requires_grad_(False)
    elif cfg.freeze == "transformer":
        transformer = getattr(encoder, "transformer", None) if encoder is not None else None
        if transformer is None:
            raise AnnotationError("freeze='transformer' needs a TransUNet (RETINA) encoder; use 'encoder' or 'none'")
        transformer.requires_grad_(False)
    enc_ids = {id(p) for p in part.parameters()} if part is not None else set()
    enc = [p for p in model.parameters() if id(p) in enc_ids and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in enc_ids and p.requires_grad]
    scale = cfg.encoder_lr_scale if pretrained else 1.0
    groups = [{"params": rest, "lr": cfg.lr}]
    if enc:
        groups.append({"params": enc, "lr": cfg.lr * scale})
    return groups

"""Build any napari-emseg network from a :class:`ModelConfig` (what checkpoints store).

Every built model carries ``model.config`` (its :class:`ModelConfig`), ``model.info`` (its
:class:`~.info.ModelInfo`) and ``model.input_multiple`` (equal to ``model.info.input_multiple``),
so a checkpoint rebuilds the exact network without the caller knowing its class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import Config, ConfigError
from .heads import head_info
from .info import ModelInfo
from .resunet import ResUNet2D, ResUNet3D
from .transunet import TransUNet2D
from .unet2d import UNet2D
from .unetr import UNETR
from .vit3d import VIT_SIZES, ViT3D

__all__ = ["ModelConfig", "build_model", "default_info", "segmentation_config", "count_parameters",
           "parameter_count_on_meta", "ARCHS"]

logger = logging.getLogger(__name__)

Arch = Literal["unetr", "resunet", "resunet2d", "unet2d", "transunet2d", "vit3d"]
ARCHS: tuple[str, ...] = ("unetr", "resunet", "resunet2d", "unet2d", "transunet2d", "vit3d")


@dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture and size of a network (saved in every checkpoint).

    Attributes
    ----------
    arch
        ``"unetr"`` (ViT-3D encoder + UNETR decoder), ``"resunet"`` (residual 3D U-Net),
        ``"resunet2d"`` (the residual U-Net in 2D, slice-wise: unrelated images, serial sections),
        ``"unet2d"`` (MONAI's plain ``BasicUNet`` in 2D, slice-wise: the scratch network for sections),
        ``"transunet2d"`` (RETINA's hybrid, slice-wise) or ``"vit3d"`` (a bare encoder, as
        pretrained by MAE-3D).
    in_channels, out_channels
        Input channels; head channels (ignored by ``vit3d``).
    vit_size
        Transformer size of ``unetr``, ``vit3d`` and ``transunet2d``: ``micro`` (96 wide, 4 deep,
        3 heads), ``tiny`` (192/12/3), ``small`` (384/12/6), ``base`` (768/12/12).
    patch_size
        ``(z, y, x)`` patch of the 3D ViT: ``(1, 16, 16)`` (MAE-3D, anisotropic EM),
        ``(4, 16, 16)`` or ``(16, 16, 16)``.
    feature_size
        UNETR decoder width at full resolution.
    widths
        Stage widths of the ResUNet and of the TransUNet CNN stem, fine to coarse.
    anisotropic_levels
        ResUNet: first down-samplings that halve only y and x.
    use_skips
        ResUNet: skip connections (MS-Con pretraining turns them off).
    subunits, norm, dropout, mlp_ratio, qkv_bias
        Convolutions per residual unit; ``"instance"``/``"batch"`` norm; dropout; transformer
        MLP ratio and attention bias.
    pos_embed
        Position embedding of the 3D ViT (``vit3d``, ``unetr``): ``"sincos"`` over z, y and x, or
        ``"inplane"`` for an encoder inflated from a 2D one (:mod:`.inflate`).
    """

    arch: Arch = "unetr"
    in_channels: int = 1
    out_channels: int = 3
    vit_size: Literal["micro", "tiny", "small", "base"] = "tiny"
    patch_size: tuple[int, int, int] = (1, 16, 16)
    feature_size: int = 16
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    anisotropic_levels: int = 2
    use_skips: bool = True
    subunits: int = 2
    norm: Literal["instance", "batch"] = "instance"
    dropout: float = 0.0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    pos_embed: Literal["sincos", "inplane"] = "sincos"


def _construct(cfg: ModelConfig) -> nn.Module:
    dim, depth, heads = VIT_SIZES[cfg.vit_size]
    vit = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
               dropout=cfg.dropout)
    if cfg.arch == "vit3d":
        return ViT3D(cfg.in_channels, cfg.patch_size, pos_embed=cfg.pos_embed, **vit)
    if cfg.arch == "unetr":
        return UNETR(cfg.in_channels, cfg.out_channels, cfg.patch_size, feature_size=cfg.feature_size,
                     norm=cfg.norm, pos_embed=cfg.pos_embed, **vit)
    if cfg.arch == "resunet":
        return ResUNet3D(cfg.in_channels, cfg.out_channels, cfg.widths, cfg.anisotropic_levels, cfg.use_skips,
                         cfg.subunits, cfg.norm, cfg.dropout)
    if cfg.arch == "unet2d":
        return UNet2D(cfg.in_channels, cfg.out_channels, cfg.widths, cfg.norm, cfg.dropout)
    if cfg.arch == "resunet2d":
        return ResUNet2D(cfg.in_channels, cfg.out_channels, cfg.widths, cfg.use_skips, cfg.subunits, cfg.norm,
                         cfg.dropout)
    if cfg.arch == "transunet2d":
        return TransUNet2D(cfg.in_channels, cfg.out_channels, cfg.widths, norm=cfg.norm, subunits=cfg.subunits,
                           **vit)
    raise ConfigError(f"ModelConfig.arch {cfg.arch!r}: choose one of {ARCHS}")


def default_info(cfg: ModelConfig) -> ModelInfo:
    """The :class:`ModelInfo` used when :func:`build_model` is given none: bare encoders give
    ``features``; 3 channels affinities, 1 channel boundaries, others semantic classes."""
    if cfg.arch == "vit3d":
        return head_info("features")
    if cfg.out_channels == 3:
        return head_info("affinities")
    if cfg.out_channels == 1:
        return head_info("boundaries")
    return head_info("semantic", n_classes=cfg.out_channels)


def build_model(cfg: ModelConfig, info: ModelInfo | None = None) -> nn.Module:
    """Build the network ``cfg`` describes, with ``.config``, ``.info`` and ``.input_multiple``.

    Parameters
    ----------
    cfg
        Architecture and size.
    info
        What the head predicts (see :func:`~.heads.head_info`); its channel count sizes the head
        (``cfg.out_channels`` is set to match). Its ``spatial_dims`` and ``input_multiple`` are
        set from the network and its ``tile`` rounded up to a multiple of ``input_multiple``.
        ``None``: :func:`default_info`.

    Returns
    -------
    torch.nn.Module
        Freshly initialised (random) weights, in training mode.

    Examples
    --------
    >>> from napari_emseg.models.heads import head_info
    >>> net = build_model(ModelConfig(arch="resunet", widths=(8, 16)), head_info("bcd"))
    >>> net.config.out_channels, net.info.input_multiple
    (3, (1, 2, 2))
    """
    if info is not None and cfg.arch != "vit3d" and info.out_channels != cfg.out_channels:
        logger.debug("sizing the head for %d channels %s", info.out_channels, info.channel_names)
        cfg = cfg.replace(out_channels=info.out_channels)
    if info is not None and info.in_channels != cfg.in_channels:
        raise ConfigError(
            f"ModelInfo says {info.in_channels} input channel(s) but ModelConfig.in_channels is "
            f"{cfg.in_channels}; make them agree"
        )
    net = _construct(cfg)
    info = info if info is not None else default_info(cfg)
    if cfg.arch == "vit3d" and info.target != "features":  # a bare encoder has no head
        info = info.replace(task="encoder", target="features", channel_names=("features",), activation="none")
    multiple = tuple(int(m) for m in net.input_multiple)
    tile = tuple(max(m, -(-t // m) * m) for t, m in zip(info.tile, multiple))
    net.config = cfg
    net.info = info.replace(spatial_dims=net.spatial_dims, input_multiple=multiple, tile=tile)
    return net


def segmentation_config(encoder: ModelConfig, out_channels: int) -> ModelConfig:
    """The segmentation network that fine-tunes a pretrained encoder of config ``encoder``:
    ``vit3d`` -> ``unetr`` on the same ViT; ``resunet`` with skips; ``transunet2d`` as it is;
    the head resized to ``out_channels``."""
    arch = "unetr" if encoder.arch == "vit3d" else encoder.arch
    return encoder.replace(arch=arch, out_channels=out_channels, use_skips=True)


def count_parameters(module: nn.Module, prefix: str = "") -> int:
    """Number of parameters (all, or of the submodule at dotted ``prefix``, e.g. ``"encoder"``)."""
    if prefix:
        module = module.get_submodule(prefix)
    return int(sum(p.numel() for p in module.parameters()))


def parameter_count_on_meta(cfg: ModelConfig, prefix: str = "") -> int:
    """:func:`count_parameters` of ``build_model(cfg)`` without allocating its weights."""
    with torch.device("meta"):
        net = _construct(cfg)
    return count_parameters(net, prefix)

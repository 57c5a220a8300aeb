"""2D -> 3D weight transfer: a 2D encoder inflated into the 3D network of the same family.

2D encoders are far cheaper to pretrain (and there is far more 2D EM to pretrain on) than 3D
ones; inflation carries what they learnt into a 3D network, as I3D did for video and Cheng et
al. did for 3D neuron segmentation from 2D ViTs:

* **convolutions** ``(O, I, ky, kx) -> (O, I, kz, ky, kx)``: ``"average"`` repeats the kernel
  along z and divides by ``kz`` (I3D); ``"centre"`` puts it in the middle z tap and zeros the
  others. On a volume that is constant along z both give the 2D network's output in every
  section, ``"centre"`` exactly (zero padding at the z borders cannot reach it), ``"average"``
  away from the top and bottom sections;
* **ViT patch embedding** ``(D, C, py, px) -> (D, C, pz, py, px)`` the same way (no padding:
  both modes exact on z-constant input);
* **position embedding**: this package's ViTs compute fixed sin-cos tables for any grid, so the
  in-plane part is resampled to any tile by construction; the 3D encoder gets
  ``pos_embed="inplane"`` (the 2D table in every section plus a z table behind a learnt gate at
  0, :class:`~.vit3d.ViT`), which keeps the blocks' view of position as in 2D;
* **transformer blocks and norms** are copied. Attention over a z-constant volume sees every key
  ``gz`` times, which leaves softmax-weighted averages unchanged, so an inflated ViT reproduces
  the 2D ViT's tokens in every section.

Sources and targets: a residual 2D U-Net (``resunet2d``) -> the residual 3D U-Net (``resunet``,
its encoder); a RETINA TransUNet-2D (``transunet2d``) -> a UNETR (``unetr``) whose ViT takes the
TransUNet transformer's blocks and norm (its patch embedding read CNN features, 1x1 over the stem's
channels, and cannot serve raw voxels: the UNETR's patch embedding starts fresh); any 2D
:class:`~.vit3d.ViT` state -> a 3D ViT (:func:`inflate_vit_state`). The plain 2D U-Net
(``unet2d``) has no 3D counterpart here and stays 2D.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from .build import ModelConfig

__all__ = ["INFLATABLE", "Mode", "inflate_kernel", "inflate_vit_state", "inflated_config", "inflate_tensors"]

Mode = Literal["average", "centre"]

#: 2D architecture -> the 3D architecture it inflates into
INFLATABLE: dict[str, str] = {"resunet2d": "resunet", "transunet2d": "unetr"}


def inflate_kernel(weight: torch.Tensor, kz: int, mode: Mode = "average") -> torch.Tensor:
    """A 2D kernel ``(O, I, ky, kx)`` as a 3D one ``(O, I, kz, ky, kx)`` (module docstring)."""
    if weight.ndim != 4:
        raise ValueError(f"inflate_kernel: a 2D kernel (O, I, ky, kx) is needed, got {tuple(weight.shape)}")
    if mode == "average":
        return weight.unsqueeze(2).repeat(1, 1, kz, 1, 1) / kz
    if mode == "centre":
        out = weight.new_zeros(weight.shape[0], weight.shape[1], kz, *weight.shape[2:])
        out[:, :, kz // 2] = weight
        return out
    raise ValueError(f"inflation mode {mode!r}: choose 'average' or 'centre'")


def inflate_tensors(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                    mode: Mode = "average") -> dict[str, torch.Tensor]:
    """Every ``source`` tensor that ``target`` has under the same name, 2D kernels inflated to the
    target's ``kz``; tensors whose shapes still differ are left out."""
    out = {}
    for k, v in source.items():
        t = target.get(k)
        if t is None:
            continue
        if v.ndim == 4 and t.ndim == 5 and tuple(v.shape) == tuple(t.shape[:2]) + tuple(t.shape[3:]):
            v = inflate_kernel(v, int(t.shape[2]), mode)
        if tuple(v.shape) == tuple(t.shape):
            out[k] = v
    return out


def inflate_vit_state(state: Mapping[str, torch.Tensor], target: torch.nn.Module, mode: Mode = "average",
                      prefix: str = "") -> dict[str, torch.Tensor]:
    """A 2D :class:`~.vit3d.ViT`'s ``state`` (keys ``patch_embed.*``, ``blocks.*``, ``norm.*``,
    under ``prefix``) as tensors for the 3D ViT ``target``'s ``state_dict``."""
    src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return inflate_tensors(src, target.state_dict(), mode)


def inflated_config(src: ModelConfig, out_channels: int) -> ModelConfig:
    """The 3D segmentation network a 2D encoder of config ``src`` inflates into."""
    if src.arch == "resunet2d":
        return src.replace(arch="resunet", out_channels=out_channels, use_skips=True)
    if src.arch == "transunet2d":
        return ModelConfig(arch="unetr", in_channels=src.in_channels, out_channels=out_channels, vit_size=src.vit_size,
                           patch_size=(1, 16, 16), norm=src.norm, dropout=src.dropout, mlp_ratio=src.mlp_ratio,
                           qkv_bias=src.qkv_bias, pos_embed="inplane")
    raise ValueError(f"a {src.arch} encoder has no 3D counterpart to inflate into (inflatable: {sorted(INFLATABLE)})")


def source_tensors(src_arch: str, tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The 2D checkpoint's encoder tensors renamed as the 3D model's, and the 3D model's part they fill."""
    if src_arch == "transunet2d":
        pre = "encoder.transformer."
        return {"encoder." + k[len(pre):]: v for k, v in tensors.items()
                if k.startswith(pre) and not k.startswith(pre + "patch_embed.")}, "encoder.blocks"
    return {k: v for k, v in tensors.items() if k.startswith("encoder.")}, "encoder"


def describe(src_arch: str, dst_arch: str, mode: Mode, loaded: int, missing: list[str]) -> dict[str, Any]:
    """What a fine-tuned model's card records about the inflation."""
    return {"from": src_arch, "to": dst_arch, "kernels": mode, "tensors": loaded,
            "position": "in-plane sin-cos per section + z gate from 0" if dst_arch == "unetr" else "none (CNN)",
            "fresh": sorted({k.rsplit(".", 1)[0] if k.endswith((".weight", ".bias")) else k for k in missing})[:8]}

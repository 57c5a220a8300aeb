"""Transfer of a whole pretrained network whose only difference from the target is its head.

The plain 2D U-Net (``unet2d``) has no separate encoder: a self-supervised one (``masked2d``
pretraining, a 1-channel reconstruction head) starts a segmentation U-Net by giving it every
tensor but the head, which starts fresh for the new target.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .checkpoint import TransplantReport
from .errors import TransplantError

logger = logging.getLogger(__name__)

#: the output convolution of the plain 2D U-Net (MONAI ``BasicUNet``)
UNET2D_HEAD = "net.final_conv."


def transplant_whole(model: nn.Module, ckpt: Any, head: str = UNET2D_HEAD) -> TransplantReport:
    """Load every tensor of ``ckpt`` into ``model`` (in place) except the head (``head`` prefix)
    when the checkpoint predicts another target than ``model``; the rest must match exactly."""
    same_target = getattr(ckpt.info, "target", None) == getattr(getattr(model, "info", None), "target", None)
    target = model.state_dict()
    offered = {k: v for k, v in ckpt.tensors.items() if same_target or not k.startswith(head)}
    wrong = [k for k in offered if k in target and tuple(offered[k].shape) != tuple(target[k].shape)]
    if wrong:
        raise TransplantError(f"encoder {ckpt.path}: {len(wrong)} tensor shape(s) differ from the model's, e.g. "
                              f"{wrong[0]} {tuple(offered[wrong[0]].shape)} vs {tuple(target[wrong[0]].shape)}; "
                              "build the model with the encoder's widths")
    common = sorted(set(offered) & set(target))
    if not common:
        raise TransplantError(f"encoder {ckpt.path}: none of its tensors belongs to the model")
    model.load_state_dict({k: offered[k] for k in common}, strict=False)
    report = TransplantReport(loaded=tuple(common), missing=tuple(sorted(set(target) - set(common))),
                              unexpected=tuple(sorted(set(offered) - set(target))))
    logger.info("network %s transferred whole (head %s): %s", ckpt.path,
                "kept" if same_target else "fresh", report)
    return report

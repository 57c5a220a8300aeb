"""The architecture a bioimage.io package of a napari-emseg model names (``import_from`` this module).

bioimage.io tools (bioimageio.core, ilastik, deepImageJ through TorchScript ...) build
:class:`EmsegNetwork` with the package's ``kwargs`` and load the ``pytorch_state_dict`` weights
into it. It wraps :func:`~..build.build_model` and applies the model's activation, so the
package's output is the probability maps napari-emseg predicts, not logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["EmsegNetwork"]


class EmsegNetwork(nn.Module):
    """A napari-emseg network rebuilt from the JSON of its config and info; maps in ``[0, 1]``.

    Parameters
    ----------
    config
        :class:`~..build.ModelConfig` as a dict (``ModelConfig.to_dict()``).
    info
        :class:`~..info.ModelInfo` as a dict.
    """

    def __init__(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        super().__init__()
        from ..build import ModelConfig, build_model
        from ..info import ModelInfo

        self.net = build_model(ModelConfig.from_dict(dict(config), strict=False),
                               ModelInfo.from_dict(dict(info), strict=False))
        self.info = self.net.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..info import apply_activation

        return apply_activation(self.net(x), self.info)

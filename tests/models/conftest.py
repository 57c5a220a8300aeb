"""Tiny model configs shared by the model tests."""

from __future__ import annotations

import pytest
import torch

from napari_emseg.models.build import ModelConfig

torch.set_num_threads(2)

TINY = {
    "unetr": ModelConfig(arch="unetr", vit_size="micro", feature_size=8),
    "unetr_iso": ModelConfig(arch="unetr", vit_size="micro", feature_size=8, patch_size=(16, 16, 16)),
    "unetr_4": ModelConfig(arch="unetr", vit_size="micro", feature_size=8, patch_size=(4, 16, 16)),
    "resunet": ModelConfig(arch="resunet", widths=(8, 16, 32), anisotropic_levels=1),
    "transunet2d": ModelConfig(arch="transunet2d", vit_size="micro", widths=(8, 16, 32)),
    "vit3d": ModelConfig(arch="vit3d", vit_size="micro"),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

"""The CUDA path: pinned read-ahead, device-side normalisation and blending, bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.progress import drain

from .toys import ConvNet, em_volume


@pytest.mark.gpu
@pytest.mark.parametrize("precision,atol", [("fp32", 2e-3), ("bf16", 3e-2)])
def test_cuda_matches_cpu(precision, atol):
    vol = em_volume((24, 64, 80), seed=13)
    cfg = InferenceConfig(tile=(8, 32, 32), block=(8, 32, 32), overlap=0.5)
    cpu = drain(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, None, cfg.replace(device="cpu")), show=False)
    gpu = drain(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, None, cfg.replace(device="cuda", precision=precision)),
                show=False)
    assert np.abs(gpu.astype(np.float32) - cpu.astype(np.float32)).max() < atol

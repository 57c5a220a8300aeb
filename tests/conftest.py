"""Shared fixtures: tiny synthetic EM volumes, a tiny checkpoint, GPU auto-skip, a helper to write N5 by hand."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when no CUDA device is usable."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: no GPU tests either way
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_em():
    """A small deterministic synthetic EM volume with neuron and mitochondria ground truth."""
    from napari_emseg.data.synthetic import make_synthetic_em

    return make_synthetic_em(shape=(12, 96, 96), seed=7)


@pytest.fixture(scope="session")
def tiny_bcd_checkpoint():
    """``save(path, card=None, seed=None) -> path``: a tiny random mitochondria (BCD) ResUNet saved
    as a checkpoint (``seed``: seed torch's global RNG first)."""

    def save(path: Path, card: dict | None = None, seed: int | None = None) -> Path:
        import torch

        from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

        if seed is not None:
            torch.manual_seed(seed)
        net = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                          head_info("bcd", tile=(4, 32, 32)))
        return save_checkpoint(path, net, card=card)

    return save


def write_n5(root: Path, name: str, data: np.ndarray, block: tuple[int, ...], attrs: dict) -> None:
    """Write ``data`` (z, y, x) as a raw-compressed DEFAULT-mode N5 dataset, as Java N5 does."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    ds = root / name
    ds.mkdir(parents=True, exist_ok=True)
    dims_xyz = list(data.shape[::-1])
    block_xyz = list(block[::-1])
    meta = {"dimensions": dims_xyz, "blockSize": block_xyz, "dataType": data.dtype.name,
            "compression": {"type": "raw"}, **attrs}
    (ds / "attributes.json").write_text(json.dumps(meta))
    be = data.astype(data.dtype.newbyteorder(">"))
    for bz in range(0, data.shape[0], block[0]):
        for by in range(0, data.shape[1], block[1]):
            for bx in range(0, data.shape[2], block[2]):
                blk = be[bz : bz + block[0], by : by + block[1], bx : bx + block[2]]
                d = ds / str(bx // block[2]) / str(by // block[1])
                d.mkdir(parents=True, exist_ok=True)
                header = struct.pack(">HH", 0, 3) + struct.pack(">III", *blk.shape[::-1])
                (d / str(bz // block[0])).write_bytes(header + blk.tobytes())

"""Tiny pretraining setups (CPU, a few seconds each) shared by the pretraining tests."""

from __future__ import annotations

import numpy as np
import pytest

#: per method: overrides that make the job tiny (model, patch, batch) and quiet
TINY: dict[str, list[str]] = {
    "mae3d": ["model.encoder.vit_size=micro", "model.decoder_width=32", "model.decoder_heads=2",
              "model.decoder_depth=1", "data.patch=2,32,32"],
    "mscon": ["model.backbone.widths=4,8,16", "model.embed_dim=16", "model.cross_grid=1,2,2",
              "model.sim_pool=1,4,4", "model.sim_hidden=16", "data.patch=2,16,16"],
    "retina": ["model.backbone.vit_size=micro", "model.backbone.widths=4,8", "data.patch=1,16,16"],
    "masked2d": ["model.backbone.widths=4,4,8,8,16", "model.mask_patch=8", "data.patch=1,32,32"],
}
COMMON = ["data.batch_size=2", "train.log_every=1", "train.checkpoint_every=2", "train.tensorboard=false",
          "train.preview_every=0", "train.warmup_fraction=0"]


def tiny_job(method: str, *extra: str):
    from napari_emseg.pretrain.methods import load_job

    return load_job(method, None, [*TINY[method], *COMMON, *extra])


def set_args(method: str, *extra: str) -> list[str]:
    """``--set`` arguments for the CLI."""
    out: list[str] = []
    for item in [*TINY[method], *COMMON, *extra]:
        out += ["--set", item]
    return out


@pytest.fixture(scope="session")
def em_npy(tmp_path_factory, tiny_em):
    """The synthetic sample as a ``.npy`` volume (12, 96, 96)."""
    path = tmp_path_factory.mktemp("em") / "em.npy"
    np.save(path, tiny_em.raw)
    return str(path)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (two threads on a busy 2-core CI box are far slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""MS-Con as the paper has it: the original as target, 16^3 cross-attention tokens, a real ViT
pyramid, an informative L_sim, and old training checkpoints refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.pretrain import mscon
from napari_emseg.pretrain.mscon import MSCon, MSConConfig, sim_vectors
from napari_emseg.pretrain.state import CheckpointError

from .conftest import tiny_job


def test_both_views_reconstruct_the_original_patch_not_the_weak_view():
    patches = np.cumsum(np.random.default_rng(0).normal(size=(2, 2, 16, 16)), -1).astype(np.float32)
    job = tiny_job("mscon", "weak.flip=1.0", "weak.rotate90=0", "weak.affine=0")  # g flips y and x
    out = mscon.make_transform(job)(patches, np.random.default_rng(1))
    np.testing.assert_array_equal(out["target"][:, 0], patches)  # x, as cut
    np.testing.assert_array_equal(out["weak"][:, 0], patches[:, :, ::-1, ::-1])  # g(x)
    old = mscon.make_transform(job.override(["model.recon_target=weak"]))(patches, np.random.default_rng(1))
    np.testing.assert_array_equal(old["target"], old["weak"])  # the previous behaviour, on request


def test_cross_attention_pools_all_levels_to_one_grid_of_the_paper_size():
    assert MSConConfig().cross_grid == (16, 16, 16)
    job = tiny_job("mscon", "model.cross_grid=2,4,4")
    torch.manual_seed(0)
    model = mscon.build_objective(job)
    _, feats = model.backbone(torch.randn(2, 1, 2, 16, 16))
    assert len(feats) == 3  # three decoder levels ...
    assert model._tokens(feats).shape == (2, 32, job.model.embed_dim)  # ... fused into 2*4*4 tokens, not 3*32
    assert model.card()["mscon"]["cross_tokens"] == 32


def test_vit_backbone_gives_a_pyramid_at_strides_16_8_4_2():
    job = tiny_job("mscon", "model.backbone.arch=vit3d", "model.backbone.vit_size=micro", "model.vit_levels=1,2,3,4",
                   "data.patch=2,64,64")
    torch.manual_seed(0)
    model = mscon.build_objective(job)
    rec, feats = model.backbone(torch.randn(1, 1, 2, 64, 64))
    assert rec.shape == (1, 1, 2, 64, 64)
    assert [tuple(f.shape[2:]) for f in feats] == [(2, 4, 4), (2, 8, 8), (2, 16, 16), (2, 32, 32)]
    assert [f.shape[1] for f in feats] == [96, 48, 24, 12] == model.backbone.channels
    flat = mscon.build_objective(job.override(["model.vit_pyramid=false"]))
    assert {tuple(f.shape[2:]) for f in flat.backbone(torch.randn(1, 1, 2, 64, 64))[1]} == {(2, 4, 4)}


def test_sim_loss_tells_unrelated_patches_from_matching_ones():
    g = torch.Generator().manual_seed(0)
    # feature maps as a network's: a large common positive mean plus patch-specific structure
    a = [5.0 + torch.randn(4, 3, 4, 16, 16, generator=g) for _ in range(2)]
    b = [5.0 + torch.randn(4, 3, 4, 16, 16, generator=g) for _ in range(2)]
    chans, pool = [1, 2], (2, 8, 8)

    def cos(x, y, center):
        return torch.nn.functional.cosine_similarity(sim_vectors(x, chans, pool, center),
                                                     sim_vectors(y, chans, pool, center), dim=1)

    assert cos(a, b, center=False).min() > 0.95  # uncentred: unrelated patches look alike
    assert cos(a, b, center=True).abs().max() < 0.3  # centred: they do not ...
    torch.testing.assert_close(cos(a, a, center=True), torch.ones(4))  # ... and a match still scores 1
    # what every patch of the batch shares (here a fixed spatial pattern) is removed by the batch centring
    shared = 3.0 * torch.randn(1, 3, 4, 16, 16, generator=g)
    a2, b2 = [f + shared for f in a], [f + shared for f in b]
    assert MSConConfig().sim_center == "batch"
    model = mscon.build_objective(tiny_job("mscon"))
    model.sim_mlp = torch.nn.Identity()  # the loss itself, without the asymmetric head
    assert model.sim_loss(a2, b2) > -0.3 and float(model.sim_loss(a2, a2)) == pytest.approx(-1.0)
    plain = mscon.build_objective(tiny_job("mscon", "model.sim_center=sample"))
    plain.sim_mlp = torch.nn.Identity()
    assert plain.sim_loss(a2, b2) < -0.8  # per-sample centring alone: unrelated patches still match


def test_old_training_checkpoints_are_refused_clearly():
    model = mscon.build_objective(tiny_job("mscon"))
    state = dict(model.state_dict())
    state["proj.0.weight"] = torch.zeros(16, 16)  # the per-level projections of the old objective
    with pytest.raises(CheckpointError, match="older napari-emseg"):
        model.load_state_dict(state)
    model.load_state_dict(model.state_dict())  # its own still load


def test_paper_grid_runs_with_memory_efficient_attention():
    cfg = MSConConfig(backbone=MSConConfig().backbone.replace(widths=(4, 8)), embed_dim=8, sim_pool=(1, 2, 2),
                      sim_hidden=8)
    model = MSCon(cfg)
    x = torch.randn(1, 1, 4, 32, 32)
    loss, m = model({"weak": x, "strong": x + 0.1 * torch.randn_like(x), "target": x})
    loss.backward()
    assert np.isfinite(m["l_cross"]) and model.cross_tokens == 4096

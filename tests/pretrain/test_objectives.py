"""MAE-3D, MS-Con and RETINA objectives: masking counts, what each loss sees, that they learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.pretrain import mae3d, masked2d, mscon, retina
from napari_emseg.pretrain.mae3d import MAE3D, make_mask, n_visible, patchify

from .conftest import tiny_job

MODULES = {"mae3d": mae3d, "mscon": mscon, "retina": retina, "masked2d": masked2d}


@pytest.mark.parametrize(
    ("grid", "ratio", "strategy", "visible"),
    [
        ((6, 6, 6), 0.9, "random", 21),      # the paper's 6x96x96 example: 21 visible of 216
        ((6, 6, 6), 0.75, "random", 54),
        ((6, 6, 6), 0.88, "space", 24),      # 4 positions x 6 sections (paper: 89 %)
        ((6, 6, 6), 0.9, "section", 36),     # one section of six (paper: 83 %)
        ((4, 2, 2), 0.9, "random", 1),       # at least one token stays visible
    ],
)
def test_masking_counts_per_strategy(grid, ratio, strategy, visible):
    assert n_visible(grid, ratio, strategy) == visible
    mask = make_mask(grid, ratio, strategy, batch=5)
    assert mask.shape == (5, int(np.prod(grid))) and mask.dtype == torch.bool
    assert (~mask).sum(1).tolist() == [visible] * 5
    per_section = mask.reshape(5, grid[0], -1)
    if strategy == "space":  # the same in-plane positions in every section
        assert torch.equal(per_section, per_section[:, :1].expand_as(per_section))
    if strategy == "section":  # whole sections, all or nothing
        assert torch.all(per_section.all(-1) | (~per_section).all(-1))
    if strategy == "random":  # not structured: masks differ between samples
        assert len({tuple(m.tolist()) for m in mask}) > 1


def test_mae_encoder_sees_visible_tokens_only_and_loss_counts_masked_ones():
    job = tiny_job("mae3d", "data.patch=4,32,32")
    torch.manual_seed(0)
    model = MAE3D(job.model)
    seen = []
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    x = torch.randn(2, 1, 4, 32, 32)
    torch.manual_seed(1)
    loss, metrics = model({"image": x})
    assert seen == [(2, n_visible((4, 2, 2), 0.9), 96)]  # 16 tokens, 90 %: 1 visible
    assert metrics["mask_ratio"] == pytest.approx(15 / 16)
    torch.manual_seed(1)  # same mask again
    pred, mask, _ = model.run(x)
    t = patchify(x, (1, 16, 16))
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = ((pred - t) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(loss, expected)
    preview = model.preview({"image": x})
    assert set(preview) == {"input", "masked", "reconstruction"} and preview["input"].shape == (32, 32)


def test_mscon_views_and_losses():
    job = tiny_job("mscon")
    batch = mscon.make_transform(job)(np.random.default_rng(0).normal(size=(2, 2, 16, 16)).astype(np.float32),
                                      np.random.default_rng(1))
    assert set(batch) == {"target", "weak", "strong"} and batch["strong"].shape == (2, 1, 2, 16, 16)
    assert batch["target"].shape == batch["weak"].shape  # the original patch (tests/pretrain/test_mscon.py)
    assert not np.array_equal(batch["strong"], batch["target"])
    torch.manual_seed(0)
    model = mscon.build_objective(job)
    loss, m = model({k: torch.from_numpy(v) for k, v in batch.items()})
    a1, a2, a3 = job.model.alpha
    assert float(loss) == pytest.approx(a1 * m["l_r"] + a2 * m["l_cross"] + a3 * m["l_sim"], rel=1e-5)
    assert -1.0 <= m["l_sim"] <= 1.0 and m["l_cross"] > 0
    # the exported network is the skip-less ResUNet whose encoder transfers
    net = model.export_model()
    assert net.config.arch == "resunet" and net.config.use_skips is False


def test_info_nce_prefers_matching_tokens():
    n = torch.randn(2, 6, 8)
    matched = mscon.info_nce(n.clone(), n, tau=0.07)
    shuffled = mscon.info_nce(n[:, torch.randperm(6)], n, tau=0.07)
    assert matched < 0.1 < shuffled


def test_retina_target_shares_the_geometry_of_its_input():
    job = tiny_job("retina")
    job = job.override(["corrupt.brightness=0", "corrupt.contrast=0", "corrupt.noise=0", "corrupt.blur=0",
                        "corrupt.cutout_count=1,1", "corrupt.cutout_size=2,2"])
    patches = np.random.default_rng(0).normal(size=(4, 1, 16, 16)).astype(np.float32)
    out = retina.make_transform(job)(patches, np.random.default_rng(3))
    diff = out["input"] != out["target"]
    # only the one 2x2 cut-out differs: the flips/rotations are the same on both
    assert all(0 < d.sum() <= 4 for d in diff)


@pytest.mark.parametrize("method", ["mae3d", "mscon", "retina", "masked2d"])
def test_each_objective_overfits_one_fixed_batch(method):
    torch.manual_seed(0)
    job = tiny_job(method)
    module = MODULES[method]
    model = module.build_objective(job)
    patches = np.random.default_rng(0).normal(size=(2, *job.data.patch)).astype(np.float32)
    patches = np.cumsum(patches, axis=-1) / 4  # some structure to learn
    batch = {k: torch.from_numpy(v) for k, v in module.make_transform(job)(patches, np.random.default_rng(0)).items()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same mask / random channels every step: one fixed problem
        loss, _ = model(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, f"parameters without gradient break DistributedDataParallel: {unused}"
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_mscon_with_a_vit_backbone_exports_the_vit():
    job = tiny_job("mscon", "model.backbone.arch=vit3d", "model.backbone.vit_size=micro", "model.vit_levels=2,4",
                   "data.patch=2,32,32")
    torch.manual_seed(0)
    model = mscon.build_objective(job)
    views = mscon.make_transform(job)(np.random.default_rng(0).normal(size=(2, 2, 32, 32)).astype(np.float32),
                                      np.random.default_rng(0))
    loss, m = model({k: torch.from_numpy(v) for k, v in views.items()})
    loss.backward()
    assert torch.isfinite(loss) and set(m) == {"l_r", "l_cross", "l_sim"}
    assert all(p.grad is not None for p in model.parameters())
    assert model.export_model().config.arch == "vit3d"

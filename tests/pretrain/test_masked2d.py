"""Masked-patch inpainting of the plain 2D U-Net: the masks, the loss, that it learns, and that
fine-tuning starts from all of it but the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.pretrain import masked2d
from napari_emseg.pretrain.methods import loss_curve

from .conftest import tiny_job


def test_grid_mask_masks_the_asked_share_of_whole_cells():
    mask = masked2d.grid_mask((32, 48), 8, 0.5, np.random.default_rng(0))
    assert mask.shape == (32, 48) and mask.mean() == pytest.approx(0.5)
    cells = mask.reshape(4, 8, 6, 8)
    assert np.all(cells.all(axis=(1, 3)) | (~cells).all(axis=(1, 3)))  # all or nothing per cell
    edge = masked2d.grid_mask((20, 20), 8, 1.0, np.random.default_rng(0))  # cells cut by the edge
    assert edge.shape == (20, 20) and edge.all()


def test_views_mask_the_input_and_keep_the_geometry_of_the_target():
    job = tiny_job("masked2d", "corrupt.brightness=0", "corrupt.contrast=0", "corrupt.noise=0")
    rng = np.random.default_rng(1)
    patches = rng.random((3, 1, 32, 32)).astype(np.float32)
    out = masked2d.make_transform(job)(patches, np.random.default_rng(2))
    assert {k: v.shape for k, v in out.items()} == {k: (3, 1, 32, 32) for k in ("input", "target", "mask")}
    m = out["mask"] > 0
    assert m.mean() == pytest.approx(0.5)
    np.testing.assert_array_equal(out["input"][~m], out["target"][~m])  # visible pixels: the target itself
    assert not np.allclose(out["input"][m], out["target"][m])  # masked ones: noise
    for p, t in zip(patches, out["target"]):  # each target is a flip / rotation of its patch
        variants = [np.rot90(q, k, (-2, -1)) for q in (p, p[..., ::-1]) for k in range(4)]
        assert any(np.array_equal(v, t) for v in variants)
    with pytest.raises(ValueError, match="2D slices"):
        masked2d.make_transform(job)(rng.random((1, 2, 32, 32)), rng)


def test_loss_weights_masked_and_visible_error():
    job = tiny_job("masked2d", "model.visible_weight=0.25")
    torch.manual_seed(0)
    obj = masked2d.build_objective(job)
    x = torch.rand(2, 1, 32, 32)
    mask = torch.zeros_like(x)
    mask[..., :16, :] = 1
    batch = {"input": x, "target": torch.rand_like(x), "mask": mask}
    loss, metrics = obj(batch)
    err = (obj.net(x) - batch["target"]) ** 2
    expected = err[..., :16, :].mean() + 0.25 * err[..., 16:, :].mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["masked_mse"] == pytest.approx(float(err[..., :16, :].mean()), rel=1e-5)
    assert set(obj.preview(batch)) == {"input", "reconstruction", "target"}


def test_it_learns_to_fill_in_masked_cells():
    """A smooth pattern: after some steps the masked cells are filled in better than with the
    patch mean (what the metric ``mean_fill_mse`` scores)."""
    job = tiny_job("masked2d")
    torch.manual_seed(0)
    obj = masked2d.build_objective(job)
    views = masked2d.make_transform(job)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 32.0
    opt = torch.optim.Adam(obj.parameters(), 3e-3)

    def batch():
        ph = rng.uniform(0, 2 * np.pi, (8, 1, 1, 1))
        p = (0.5 + 0.4 * np.sin(2 * np.pi * (xx + yy) + ph)).astype(np.float32)
        return {k: torch.from_numpy(v) for k, v in views(p, rng).items()}

    for _ in range(150):
        loss, metrics = obj(batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, metrics = obj(batch())
    assert metrics["masked_mse"] < 0.5 * metrics["mean_fill_mse"]


def test_loss_curve_keeps_first_and_last_and_thins_the_rest():
    history = [{"step": 10 * (i + 1), "loss": 1.0 / (i + 1)} for i in range(100)]
    curve = loss_curve(history, points=5)
    assert list(curve) == ["10", "260", "510", "750", "1000"] and curve["10"] == 1.0
    assert loss_curve([]) == {}


def test_fine_tuning_starts_from_all_but_the_head(em_npy, tmp_path):
    from napari_emseg.finetune.job import FineTuneConfig, fine_tune
    from napari_emseg.models.checkpoint import load_checkpoint
    from napari_emseg.models.heads import head_info
    from napari_emseg.models.registry import model_for_encoder
    from napari_emseg.pretrain.methods import pretrain
    from napari_emseg.progress import drain

    res = drain(pretrain(tiny_job("masked2d", "train.max_steps=2"), [em_npy], tmp_path / "run", name="tiny-m2d"),
                show=False)
    ckpt = load_checkpoint(res.encoder)
    assert ckpt.card["voxel_size"] is None and ckpt.card["method"].startswith("masked-patch inpainting")
    assert list(ckpt.card["loss_curve"]) == ["1", "2"]
    model, report = model_for_encoder(res.encoder, head_info("bcd", task="mitochondria"))
    assert report.missing == ("net.final_conv.bias", "net.final_conv.weight")  # 3 channels: a fresh head
    assert len(report.loaded) == len(ckpt.tensors) - 2 and not report.unexpected
    for k in report.loaded:
        torch.testing.assert_close(model.state_dict()[k], ckpt.tensors[k])
    one, report = model_for_encoder(res.encoder, head_info("boundaries", task="neurons"))
    assert "net.final_conv.weight" in report.missing  # same shape, another target: still fresh
    raw = np.load(em_npy)
    labels = np.zeros(raw.shape, np.uint32)
    labels[5, :48, :48] = 1
    labels[5, 60:, 60:] = 2
    cfg = FineTuneConfig(task="mitochondria", steps=2, batch_size=2, patch=(1, 32, 32), calibrate=False,
                         device="cpu", dims="2d")
    out = drain(fine_tune(str(res.encoder), raw, labels, cfg, out=tmp_path / "ft.safetensors"), show=False)
    card = load_checkpoint(out.checkpoint, tensors=False).card
    assert card["transplant"]["part"] == "net" and card["transplant"]["missing"] == 2
    assert out.model.config.arch == "unet2d" and out.model.info.target == "bcd"

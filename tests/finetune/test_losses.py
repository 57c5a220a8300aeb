"""Masked losses ignore unknown voxels: changing them changes nothing."""

from __future__ import annotations

import pytest
import torch

from napari_emseg.finetune.losses import task_loss


@pytest.mark.parametrize("kind, channels", [("affinities", 3), ("boundaries", 1), ("bcd", 3), ("semantic", 4)])
def test_unknown_voxels_do_not_matter(kind, channels):
    g = torch.Generator().manual_seed(0)
    shape = (2, channels, 3, 8, 8)
    logits = torch.randn(shape, generator=g, requires_grad=True)
    if kind == "semantic":
        target = torch.randint(0, channels, (2, 1, 3, 8, 8), generator=g).float()
        mask = (torch.rand((2, 1, 3, 8, 8), generator=g) > 0.5).float()
    else:
        target = (torch.rand(shape, generator=g) > 0.7).float()
        mask = (torch.rand(shape, generator=g) > 0.5).float()
    loss, parts = task_loss(kind, logits, target, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and parts

    # scramble everything outside the mask
    unknown = (mask == 0).expand_as(logits) if kind == "semantic" else mask == 0
    logits2 = logits.detach().clone()
    logits2[unknown] = torch.randn(int(unknown.sum()), generator=g) * 10
    target2 = target.clone()
    t_unknown = mask == 0
    target2[t_unknown] = 1 - target2[t_unknown] if kind != "semantic" else 0
    logits2.requires_grad_(True)
    loss2, _ = task_loss(kind, logits2, target2, mask)
    (grad2,) = torch.autograd.grad(loss2, logits2)
    assert torch.allclose(loss, loss2, atol=1e-6)
    assert torch.allclose(grad[~unknown], grad2[~unknown], atol=1e-6)
    assert torch.all(grad2[unknown] == 0)


def test_loss_falls_toward_the_target():
    target = torch.zeros(1, 1, 2, 6, 6)
    target[..., 2:4, :] = 1
    mask = torch.ones_like(target)
    good, _ = task_loss("boundaries", (target * 2 - 1) * 8, target, mask)
    bad, _ = task_loss("boundaries", (1 - target * 2) * 8, target, mask)
    assert good < 0.05 < bad


def test_bcd_weighs_the_foreground_fully_and_the_splitting_channels_lightly():
    from napari_emseg.finetune.losses import BCD_AUX_WEIGHT, masked_bce, masked_dice, masked_mse

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    target = (torch.rand(2, 3, 16, 16, generator=g) > 0.7).float()
    mask = torch.ones_like(target)
    loss, parts = task_loss("bcd", logits, target, mask)
    fg = masked_bce(logits[:, :1], target[:, :1], mask[:, :1], balance=False) + masked_dice(
        torch.sigmoid(logits[:, :1]), target[:, :1], mask[:, :1])
    contour = masked_bce(logits[:, 1:2], target[:, 1:2], mask[:, 1:2]) + masked_dice(
        torch.sigmoid(logits[:, 1:2]), target[:, 1:2], mask[:, 1:2])
    mse = masked_mse(torch.sigmoid(logits[:, 2:3]), target[:, 2:3], mask[:, 2:3])
    assert 0 < BCD_AUX_WEIGHT < 0.5
    assert torch.allclose(loss, fg + BCD_AUX_WEIGHT * (contour + mse))
    assert parts["foreground"] == pytest.approx(float(fg))
    # the foreground's gradient is not diluted by the other channels
    logits.requires_grad_(True)
    task_loss("bcd", logits, target, mask)[0].backward()
    g_fg, g_rest = logits.grad[:, :1].abs().mean(), logits.grad[:, 1:].abs().mean()
    assert g_fg > 2 * g_rest

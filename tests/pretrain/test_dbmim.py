"""dbMiM masking: the policy's draw and probabilities, that REINFORCE teaches it to mask what is
rewarded, and MAE-3D training with it end to end."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from napari_emseg.pretrain.dbmim import MaskPolicy, plackett_luce_log_prob
from napari_emseg.pretrain.mae3d import MAE3D, n_visible

from .conftest import tiny_job


def test_plackett_luce_probabilities_sum_to_one():
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    total = 0.0
    for order in itertools.permutations(range(4), 2):
        total += float(plackett_luce_log_prob(scores, torch.tensor([order])).exp())
    assert total == pytest.approx(1.0, abs=1e-6)
    p = torch.softmax(scores, 1)[0]
    first, second = 2, 3
    expected = p[first] * p[second] / (1 - p[first])
    assert float(plackett_luce_log_prob(scores, torch.tensor([[first, second]])).exp()) == pytest.approx(float(expected))


def test_policy_keeps_the_same_number_visible_and_starts_uniform():
    torch.manual_seed(0)
    policy = MaskPolicy(8, hidden=16)
    mask, d = policy(torch.randn(3, 20, 8), keep=4)
    assert mask.shape == (3, 20) and (~mask).sum(1).tolist() == [4, 4, 4]
    assert torch.allclose(d["entropy"], torch.ones(3))  # zero scores: every token equally likely
    assert d["log_prob"].shape == (3,) and torch.allclose(d["log_prob"], torch.full((3,), -math.log(20 * 19 * 18 * 17)))


def test_reinforce_learns_to_mask_the_rewarded_tokens():
    torch.manual_seed(0)
    n, keep = 16, 4
    tokens = torch.randn(1, n, 8).expand(32, n, 8).contiguous()  # one state, many agents' draws
    hard = torch.zeros(n, dtype=torch.bool)
    hard[:4] = True  # masking these makes "reconstruction" hard: the reward
    policy = MaskPolicy(8, hidden=32, entropy_coef=0.0)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)

    def masked_hard_share() -> float:
        with torch.no_grad():
            mask, _ = policy(tokens, keep)
        return float(mask[:, hard].float().mean())

    before = masked_hard_share()
    for _ in range(150):
        mask, d = policy(tokens, keep)
        reward = mask[:, hard].float().sum(1)
        loss = policy.loss(d, reward)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = masked_hard_share()
    assert before < 0.85 and after > 0.97, (before, after)


def test_mae3d_with_dbmim_trains_policy_and_encoder_apart():
    job = tiny_job("mae3d", "data.patch=4,32,32", "model.mask_strategy=dbmim", "model.mask_ratio=0.75")
    torch.manual_seed(0)
    model = MAE3D(job.model)
    seen = []
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    x = torch.randn(2, 1, 4, 32, 32)
    loss, metrics = model({"image": x})
    assert seen == [(2, n_visible((4, 2, 2), 0.75), 96)]
    assert {"rec_loss", "policy_loss", "policy_entropy", "mask_ratio"} <= set(metrics)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every parameter used
    # the policy's own loss reaches only the policy: its state and reward are detached
    model.zero_grad(set_to_none=True)
    decision: dict = {}
    model.run(x, decision=decision)
    model.policy.loss(decision, torch.ones(2)).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.policy.parameters())
    assert not any(k.startswith("policy") for k in model.export_model().state_dict())


def test_pretrain_cli_with_dbmim_exports_a_plain_vit(em_npy, tmp_path):
    from napari_emseg.cli.pretrain import main
    from napari_emseg.models.checkpoint import load_model

    from .conftest import set_args

    out = tmp_path / "run"
    assert main(["-q", "--method", "mae3d", "--data", em_npy, "--out", str(out), "--max-steps", "2",
                 *set_args("mae3d", "model.mask_strategy=dbmim")]) == 0
    model = load_model(out / "mae3d-vit3d-micro.safetensors")
    assert model.config.arch == "vit3d" and np.isfinite(sum(float(p.sum()) for p in model.parameters()))

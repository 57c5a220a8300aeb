"""Every architecture and head: shapes, gradients, input checks, geometry."""

from __future__ import annotations

import pytest
import torch

from napari_emseg.models.build import ModelConfig, build_model
from napari_emseg.models.errors import InputShapeError
from napari_emseg.models.heads import head_info
from napari_emseg.models.unetr import skip_blocks, upsample_factors
from napari_emseg.models.vit3d import VIT_SIZES, vit3d

from .conftest import TINY

HEADS = {
    "affinities": head_info("affinities"),
    "long-range affinities": head_info("affinities", offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -4, 0), (0, 0, -4)]),
    "boundaries": head_info("boundaries"),
    "bcd": head_info("bcd"),
    "semantic": head_info("semantic", n_classes=4),
    "reconstruction": head_info("reconstruction"),
}


def _odd_shape(multiple):
    # 3 and 5 tokens/levels: not powers of two, not cubes (z kept short when z is patched)
    kz = 3 if multiple[0] <= 2 else 1
    return tuple(m * k for m, k in zip(multiple, (kz, 3, 5)))


@pytest.mark.parametrize("arch", ["unetr", "unetr_iso", "unetr_4", "resunet", "transunet2d"])
def test_forward_backward_every_arch(arch):
    net = build_model(TINY[arch], HEADS["bcd"])
    shape = _odd_shape(net.info.input_multiple)
    x = torch.randn(2, 1, *shape, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, *shape)
    y.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_sizes_the_output(head):
    info = HEADS[head]
    net = build_model(TINY["resunet"], info)
    assert net.config.out_channels == info.out_channels == len(info.channel_names)
    y = net(torch.randn(1, 1, 2, 8, 12))
    assert y.shape[1] == info.out_channels
    y.mean().backward()


def test_head_info_channels_and_activations():
    assert HEADS["long-range affinities"].channel_names == ("aff_z", "aff_y", "aff_x", "aff_y-4", "aff_x-4")
    assert HEADS["semantic"].activation == "softmax" and HEADS["semantic"].channel_names[0] == "class_0"
    assert HEADS["reconstruction"].activation == "none"
    assert HEADS["bcd"].task == "mitochondria" and HEADS["affinities"].task == "neurons"
    with pytest.raises(ValueError, match="nearest neighbours"):
        head_info("affinities", offsets=[(0, -4, 0), (0, -1, 0), (0, 0, -1)])


def test_model_carries_info_consistent_with_geometry():
    for key, cfg in TINY.items():
        net = build_model(cfg)
        assert tuple(net.input_multiple) == net.info.input_multiple, key
        assert all(t % m == 0 for t, m in zip(net.info.tile, net.info.input_multiple)), key
        assert net.config == cfg
    assert build_model(TINY["transunet2d"]).info.spatial_dims == 2
    assert build_model(TINY["unetr"]).info.input_multiple == (1, 16, 16)
    assert build_model(TINY["resunet"]).info.input_multiple == (2, 4, 4)  # 1 anisotropic level, then 2x2x2


@pytest.mark.parametrize("arch", ["unetr", "resunet", "transunet2d", "vit3d"])
def test_non_multiple_input_is_a_clear_error(arch):
    net = build_model(TINY[arch])
    mz, my, mx = net.info.input_multiple
    with pytest.raises(InputShapeError, match="not a multiple"):
        net(torch.randn(1, 1, 2 * mz, my + 1, 2 * mx))
    with pytest.raises(InputShapeError, match="input channel"):
        net(torch.randn(1, 2, 2 * mz, 2 * my, 2 * mx))


def test_vit3d_contract_for_pretraining():
    enc = vit3d("micro")
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.patch_size, enc.in_channels) == (96, 4, 3, (1, 16, 16), 1)
    assert len(enc.blocks) == 4 and isinstance(enc.norm, torch.nn.LayerNorm)
    x = torch.randn(2, 1, 3, 32, 48)
    grid = enc.grid_shape(x.shape[2:])
    assert grid == (3, 2, 3)
    tokens = enc.patch_embed(x)
    pos = enc.pos_embed(grid)
    assert tokens.shape == (2, 18, 96) and pos.shape == (1, 18, 96) and not pos.requires_grad
    out, hidden = enc(x)
    assert out.shape == (2, 18, 96) and len(hidden) == 4
    # forward == patch_embed + pos -> blocks -> norm, as MAE re-implements it on visible tokens
    h = tokens + pos
    for blk in enc.blocks:
        h = blk(h)
    torch.testing.assert_close(enc.norm(h), out)
    assert "pos" not in " ".join(enc.state_dict())  # positions are computed, not stored


def test_position_embedding_depends_on_the_grid_position():
    enc = vit3d("micro")
    pos = enc.pos_embed((2, 3, 4))[0].reshape(2, 3, 4, -1)
    # distinct per token, and the same (z, y, x) position gives the same code on a larger grid
    assert torch.cdist(pos.reshape(24, -1), pos.reshape(24, -1)).fill_diagonal_(1).min() > 1e-3
    big = enc.pos_embed((3, 5, 6))[0].reshape(3, 5, 6, -1)
    torch.testing.assert_close(big[:2, :3, :4], pos)


def test_vit_sizes_match_the_brief():
    assert VIT_SIZES["tiny"] == (192, 12, 3) and VIT_SIZES["small"] == (384, 12, 6)
    assert VIT_SIZES["base"] == (768, 12, 12)


def test_unetr_geometry_helpers():
    assert upsample_factors((1, 16, 16)) == [(1, 2, 2)] * 4
    assert upsample_factors((4, 16, 16)) == [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert skip_blocks(12) == (2, 5, 8) and skip_blocks(4) == (0, 1, 2)
    with pytest.raises(ValueError, match="powers of two"):
        upsample_factors((3, 16, 16))


def test_resunet_features_and_no_skips():
    for skips in (True, False):
        net = build_model(TINY["resunet"].replace(use_skips=skips), head_info("reconstruction"))
        logits, feats = net(torch.randn(1, 1, 4, 16, 16), return_features=True)
        assert logits.shape == (1, 1, 4, 16, 16)
        assert [f.shape[1] for f in feats] == [32, 16, 8]  # coarse -> fine
        assert [f.shape[2:] for f in feats] == [(2, 4, 4), (4, 8, 8), (4, 16, 16)]
    # without skips, the first decoder block sees only the up-sampled path
    assert net.decoder.blocks[0].conv[0].conv.in_channels == 16


def test_transunet_runs_slice_wise_on_volumes():
    net = build_model(TINY["transunet2d"], head_info("semantic", n_classes=3)).eval()
    vol = torch.randn(1, 1, 3, 16, 24)
    with torch.no_grad():
        out = net(vol)
        per_slice = torch.stack([net(vol[:, :, z]) for z in range(3)], dim=2)
    assert out.shape == (1, 3, 3, 16, 24)
    torch.testing.assert_close(out, per_slice)
    assert len(net.encoder.transformer.blocks) == 4


def test_build_model_checks_channels():
    from napari_emseg.config import ConfigError

    with pytest.raises(ConfigError, match="input channel"):
        build_model(ModelConfig(arch="resunet"), head_info("bcd", in_channels=2))
    net = build_model(ModelConfig(arch="resunet", widths=(8, 16), in_channels=2), head_info("bcd", in_channels=2))
    assert net(torch.randn(1, 2, 1, 4, 4)).shape == (1, 3, 1, 4, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["unetr", "resunet", "transunet2d"])
def test_models_run_on_cuda_under_autocast(arch):
    from napari_emseg.device import autocast_dtype

    net = build_model(TINY[arch], HEADS["affinities"]).cuda()
    x = torch.randn(2, 1, *_odd_shape(net.info.input_multiple), device="cuda")
    dtype = autocast_dtype(torch.device("cuda"))
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        y = net(x)
    assert y.shape == (2, 3, *x.shape[2:]) and torch.isfinite(y).all()
    y.float().mean().backward()

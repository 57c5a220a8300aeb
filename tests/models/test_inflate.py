"""2D -> 3D inflation: an inflated network on a z-constant volume computes what the 2D one
computes in every section; position tables, modes, and checkpoints with and without it."""

from __future__ import annotations

import pytest
import torch

from napari_emseg.models import ModelConfig, build_model, load_model, save_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.models.inflate import inflate_kernel, inflate_tensors, inflate_vit_state
from napari_emseg.models.registry import model_for_encoder
from napari_emseg.models.resunet import ResUNetEncoder, resunet_strides
from napari_emseg.models.vit3d import ViT, ViT3D


def z_constant(img2d: torch.Tensor, depth: int) -> torch.Tensor:
    return img2d[:, :, None].expand(-1, -1, depth, -1, -1).contiguous()


@pytest.mark.parametrize(("pz", "mode"), [(1, "average"), (4, "average"), (4, "centre")])
def test_inflated_vit_reproduces_the_2d_tokens_in_every_section(pz, mode):
    torch.manual_seed(0)
    vit2d = ViT(1, (16, 16), embed_dim=48, depth=2, num_heads=3)
    vit3d = ViT3D(1, (pz, 16, 16), embed_dim=48, depth=2, num_heads=3, pos_embed="inplane")
    state = inflate_vit_state(vit2d.state_dict(), vit3d, mode)
    assert set(vit3d.state_dict()) - set(state) == {"z_pos_gate"}  # everything else came from 2D
    vit3d.load_state_dict(state, strict=False)
    img = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        t2, h2 = vit2d(img)
        t3, h3 = vit3d(z_constant(img, 2 * pz))
    per_section = t3.reshape(2, 2, -1, 48)  # (B, gz, gy*gx, D)
    for z in range(2):
        torch.testing.assert_close(per_section[:, z], t2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h3[0].reshape(2, 2, -1, 48)[:, 1], h2[0], atol=1e-5, rtol=1e-4)


def test_inplane_position_gate_starts_at_zero_and_learns_z():
    vit = ViT3D(1, (1, 16, 16), embed_dim=48, depth=1, num_heads=3, pos_embed="inplane")
    pos = vit.pos_embed((3, 2, 2))
    torch.testing.assert_close(pos[:, :4], pos[:, 4:8])  # no z information at first ...
    assert vit.z_pos_gate.requires_grad
    with torch.no_grad():
        vit.z_pos_gate.fill_(1.0)
    assert not torch.allclose(vit.pos_embed((3, 2, 2))[:, :4], vit.pos_embed((3, 2, 2))[:, 4:8])  # ... then some
    with pytest.raises(ValueError, match="inplane"):
        ViT(1, (16, 16), embed_dim=48, depth=1, num_heads=3, pos_embed="inplane")


def test_inflated_resunet_encoder_reproduces_the_2d_features():
    torch.manual_seed(0)
    widths = (4, 8, 16, 32)
    enc2d = ResUNetEncoder(1, widths, [(2, 2)] * 3, spatial_dims=2)
    enc3d = ResUNetEncoder(1, widths, resunet_strides(4, 2), spatial_dims=3)
    img = torch.randn(1, 1, 32, 32)
    x3 = z_constant(img, 8)
    with torch.no_grad():
        f2 = enc2d(img)
        enc3d.load_state_dict(inflate_tensors(enc2d.state_dict(), enc3d.state_dict(), "centre"))
        f3 = enc3d(x3)
        for a, b in zip(f2, f3):  # centre: exact in every section, at every level
            for z in range(b.shape[2]):
                torch.testing.assert_close(b[:, :, z], a, atol=1e-5, rtol=1e-4)
        # average (I3D): only near, as zero padding changes the border sections and through
        # instance norm's statistics every section a little (the less, the deeper the stack)
        enc3d.load_state_dict(inflate_tensors(enc2d.state_dict(), enc3d.state_dict(), "average"))
        err = []
        for depth in (8, 32):
            f3 = enc3d(z_constant(img, depth))
            mid = f3[0][:, :, depth // 2]
            err.append(float((mid - f2[0]).abs().max() / f2[0].abs().max()))
        assert err[1] < 0.05 and err[1] < err[0] < 0.2, err


def test_inflate_kernel_modes():
    w = torch.randn(2, 3, 3, 3)
    assert torch.allclose(inflate_kernel(w, 3, "average").sum(2), w)
    c = inflate_kernel(w, 3, "centre")
    assert torch.equal(c[:, :, 1], w) and not c[:, :, 0].any()
    with pytest.raises(ValueError, match="mode"):
        inflate_kernel(w, 3, "nearest")


def test_model_for_encoder_inflates_a_transunet_into_a_unetr(tmp_path):
    torch.manual_seed(0)
    retina = build_model(ModelConfig(arch="transunet2d", vit_size="micro", widths=(8, 16, 32)),
                         head_info("reconstruction"))
    path = save_checkpoint(tmp_path / "retina.safetensors", retina, card={"method": "retina"})
    model, report = model_for_encoder(path, head_info("affinities"), dims=3)
    assert model.config.arch == "unetr" and model.config.pos_embed == "inplane" and model.info.spatial_dims == 3
    src = retina.encoder.transformer.state_dict()
    for k, v in model.encoder.blocks.state_dict().items():
        torch.testing.assert_close(v, src[f"blocks.{k}"])
    assert "encoder.patch_embed.proj.weight" in report.missing  # read the stem's channels: starts fresh
    assert model.inflation["from"] == "transunet2d" and model.inflation["part"] == "encoder.blocks"
    same, _ = model_for_encoder(path, head_info("affinities"))  # without dims: the 2D network as before
    assert same.config.arch == "transunet2d"
    # the inflated model saves and loads as any other, with its position mode
    loaded = load_model(save_checkpoint(tmp_path / "unetr.safetensors", model, card={}))
    assert loaded.config.pos_embed == "inplane" and torch.equal(loaded.encoder.z_pos_gate, model.encoder.z_pos_gate)


def test_model_for_encoder_inflates_a_2d_resunet(tmp_path):
    torch.manual_seed(0)
    net2d = build_model(ModelConfig(arch="resunet2d", widths=(4, 8, 16)), head_info("boundaries"))
    path = save_checkpoint(tmp_path / "r2d.safetensors", net2d, card={"method": "fine-tuned"})
    model, report = model_for_encoder(path, head_info("affinities"), dims=3, inflate="centre")
    assert model.config.arch == "resunet" and not report.missing
    w2 = net2d.encoder.stages[0].conv.unit0.conv.weight
    w3 = model.encoder.stages[0].conv.unit0.conv.weight
    assert torch.equal(w3[:, :, 1], w2) and model.inflation["kernels"] == "centre"

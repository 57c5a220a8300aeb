"""Checkpoints: round trips, metadata, errors, atomic writes, encoder transplant."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from napari_emseg.config import Config
from napari_emseg.models.build import build_model, segmentation_config
from napari_emseg.models.checkpoint import (
    load_checkpoint,
    load_model,
    read_state_dict,
    save_checkpoint,
    transplant_encoder,
)
from napari_emseg.models.errors import (
    ChannelMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    NotACheckpointError,
    TaskMismatchError,
    TransplantError,
)
from napari_emseg.models.heads import head_info

from .conftest import TINY

CARD = {"family": "ViT-3D micro", "method": "mae3d", "data": "synthetic", "steps": 3, "final_loss": 0.5,
        "licence": "CC-BY-4.0", "command": "napari-emseg-pretrain ...", "training": {"lr": 1e-4}}


def _x(net, batch=1):
    return torch.randn(batch, 1, *(2 * m if m > 1 else 2 for m in net.info.input_multiple))


@pytest.mark.parametrize("arch", ["unetr", "unetr_4", "resunet", "transunet2d"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Job(Config):
        steps: int = 7

    info = head_info("bcd", voxel_size=(40.0, 4.0, 4.0))
    net = build_model(TINY[arch], info)
    with torch.no_grad():  # make norms/biases non-trivial so a wrong load would show
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    path = save_checkpoint(tmp_path / "m.safetensors", net, job=Job(), card=CARD)
    back = load_model(path)
    assert type(back) is type(net) and not back.training
    assert back.config == net.config and back.info == net.info and back.card == CARD
    x = _x(net)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    ckpt = load_checkpoint(path, tensors=False)
    assert ckpt.job == {"steps": 7} and ckpt.tensors == {} and ckpt.task == "mitochondria"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporaries left


def test_vit3d_encoder_round_trip(tmp_path):
    enc = build_model(TINY["vit3d"]).eval()
    back = load_model(save_checkpoint(tmp_path / "enc.safetensors", enc, card=CARD))
    x = torch.randn(1, 1, 2, 32, 32)
    torch.testing.assert_close(back(x)[0], enc(x)[0], rtol=0, atol=0)
    assert back.info.task == "encoder" and back.info.target == "features"


def test_errors_name_the_problem(tmp_path):
    net = build_model(TINY["resunet"], head_info("affinities"))
    good = save_checkpoint(tmp_path / "aff.safetensors", net)
    with pytest.raises(TaskMismatchError, match="'neurons'.*not 'mitochondria'"):
        load_model(good, expect_task="mitochondria")
    with pytest.raises(ChannelMismatchError, match="1 input channel.*has 3"):
        load_model(good, expect_in_channels=3)
    assert load_model(good, expect_task="neurons", expect_in_channels=1).info.task == "neurons"
    with pytest.raises(CheckpointNotFoundError):
        load_model(tmp_path / "missing.safetensors")
    # truncated file
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="cut.safetensors"):
        load_model(tmp_path / "cut.safetensors")
    # garbage
    (tmp_path / "junk.safetensors").write_bytes(b"\x07not a checkpoint at all" * 10)
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(tmp_path / "junk.safetensors")
    # plain safetensors without our metadata
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(NotACheckpointError, match="transplant_encoder"):
        load_model(tmp_path / "plain.safetensors")
    # third-party .pth
    torch.save({"w": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(NotACheckpointError, match="PyTorch weights"):
        load_model(tmp_path / "x.pth")
    # weights that do not fit their own config
    meta = load_checkpoint(good, tensors=False)
    tensors = dict(load_checkpoint(good).tensors)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={
        "format": "napari-emseg.checkpoint/1", "config": meta.config.to_json(), "info": meta.info.to_json()})
    with pytest.raises(CorruptCheckpointError, match="do not fit"):
        load_model(tmp_path / "bad.safetensors")


def test_failed_save_keeps_the_previous_file(tmp_path):
    net = build_model(TINY["resunet"])
    path = save_checkpoint(tmp_path / "m.safetensors", net)
    before = path.read_bytes()
    net.info = "not a ModelInfo"
    with pytest.raises(TypeError):
        save_checkpoint(path, net)
    assert path.read_bytes() == before


def test_read_state_dict_refuses_pickled_objects(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(3)}}, tmp_path / "ok.pth")
    assert torch.equal(read_state_dict(tmp_path / "ok.pth")["a"], torch.ones(3))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"a": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(CorruptCheckpointError, match="never pickled objects"):
        read_state_dict(tmp_path / "evil.pth")


# -- transplant -------------------------------------------------------------------------------------
def test_transplant_vit3d_checkpoint_into_unetr(tmp_path):
    enc = build_model(TINY["vit3d"])
    src = save_checkpoint(tmp_path / "mae.safetensors", enc, card=CARD)
    seg = build_model(segmentation_config(enc.config, 3), head_info("affinities"))
    decoder_before = seg.head.conv.conv.weight.detach().clone()
    report = transplant_encoder(seg, src)
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == len(enc.state_dict())
    for k, v in enc.state_dict().items():
        assert torch.equal(seg.state_dict()[f"encoder.{k}"], v)
    assert torch.equal(seg.head.conv.conv.weight, decoder_before)  # only the encoder changed


def test_transplant_resunet_pretraining_into_segmentation(tmp_path):
    mscon = build_model(TINY["resunet"].replace(use_skips=False), head_info("reconstruction"))
    src = save_checkpoint(tmp_path / "mscon.safetensors", mscon, card=CARD)
    seg = build_model(segmentation_config(mscon.config, 3), head_info("bcd"))
    report = transplant_encoder(seg, src)
    assert report.loaded and not report.missing and not report.unexpected
    assert all(k.startswith("encoder.") for k in report.loaded)
    torch.testing.assert_close(seg.encoder.stages[0].conv.unit0.conv.weight, mscon.encoder.stages[0].conv.unit0.conv.weight)


def test_transplant_transunet_transformer_only(tmp_path):
    retina = build_model(TINY["transunet2d"], head_info("reconstruction"))
    src = save_checkpoint(tmp_path / "retina.safetensors", retina, card=CARD)
    seg = build_model(segmentation_config(retina.config, 4), head_info("semantic", n_classes=4))
    stem_before = {k: v.clone() for k, v in seg.encoder.stem.state_dict().items()}
    report = transplant_encoder(seg, src, part="encoder.transformer")
    assert report.loaded and all(k.startswith("encoder.transformer.") for k in report.loaded)
    assert all(torch.equal(v, seg.encoder.stem.state_dict()[k]) for k, v in stem_before.items())
    full = transplant_encoder(seg, src)  # whole encoder: stem too
    assert len(full.loaded) > len(report.loaded)


def test_transplant_reports_and_fails_loudly(tmp_path):
    enc = build_model(TINY["vit3d"])
    # a deeper source: extra blocks are reported as unexpected, not silently dropped
    extra = {**enc.state_dict(), "blocks.9.mlp.linear1.weight": torch.zeros(1)}
    report = transplant_encoder(build_model(TINY["unetr"]), extra)
    assert report.unexpected == ("encoder.blocks.9.mlp.linear1.weight",)
    # shape mismatch: another patch size
    src = save_checkpoint(tmp_path / "enc.safetensors", enc)
    with pytest.raises(TransplantError, match="patch_embed.*patch \\(1, 16, 16\\).*patch \\(4, 16, 16\\)"):
        transplant_encoder(build_model(TINY["unetr_4"]), src)
    # another input channel count
    two = build_model(TINY["vit3d"].replace(in_channels=2), head_info("features", in_channels=2))
    with pytest.raises(ChannelMismatchError):
        transplant_encoder(build_model(TINY["unetr"]), save_checkpoint(tmp_path / "two.safetensors", two))
    # nothing in common
    with pytest.raises(TransplantError, match="none of its"):
        transplant_encoder(build_model(TINY["resunet"]), src)


def test_transplant_from_third_party_pth(tmp_path):
    enc = build_model(TINY["vit3d"])
    torch.save({"model": {f"module.{k}": v for k, v in enc.state_dict().items()}}, tmp_path / "ext.pth")
    report = transplant_encoder(build_model(TINY["unetr"]), tmp_path / "ext.pth")
    assert len(report.loaded) == len(enc.state_dict()) and not report.missing


def test_checkpoint_header_is_plain_json(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(TINY["resunet"]), card=CARD)
    n = int.from_bytes(path.read_bytes()[:8], "little")
    meta = json.loads(path.read_bytes()[8 : 8 + n])["__metadata__"]
    assert meta["format"] == "napari-emseg.checkpoint/1"
    assert json.loads(meta["card"])["method"] == "mae3d" and json.loads(meta["config"])["arch"] == "resunet"

"""What a fine-tune takes from a pretrained encoder: RETINA transfers its transformer, frozen."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_emseg.finetune.annotations import AnnotationError
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.model_setup import TRANSFORMER, Transfer, plan_transfer
from napari_emseg.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.progress import drain

RETINA_CARD = {"family": "TransUNet-2D micro", "method": "retina", "data": "synthetic", "steps": 1}


@pytest.fixture
def retina_encoder(tmp_path):
    torch.manual_seed(1)
    net = build_model(ModelConfig(arch="transunet2d", vit_size="micro", widths=(8, 16, 32)),
                      head_info("reconstruction"))
    return save_checkpoint(tmp_path / "retina.safetensors", net, card=RETINA_CARD), net


def test_retina_fine_tune_transfers_the_transformer_only_and_keeps_it_frozen(tiny_em, retina_encoder, tmp_path):
    path, pretrained = retina_encoder
    lab = np.zeros_like(tiny_em.mitochondria)
    lab[4] = tiny_em.mitochondria[4]
    cfg = FineTuneConfig(task="mitochondria", dims="2d", patch=(1, 32, 32), batch_size=2, steps=4, lr=1e-2,
                         calibrate=False, holdout=False)
    result = drain(fine_tune(str(path), tiny_em.raw, lab, cfg, voxel_size=(40.0, 8.0, 8.0)), show=False)
    model = result.model
    src = pretrained.state_dict()
    for k, v in model.encoder.transformer.state_dict().items():  # transferred, and untouched by training
        torch.testing.assert_close(v, src[f"encoder.transformer.{k}"], msg=k)
    stem = model.encoder.stem.state_dict()
    # the CNN stem is not transferred (nor equal to the source after a few steps from its own init)
    assert any(not torch.equal(v, src[f"encoder.stem.{k}"]) for k, v in stem.items() if v.is_floating_point())
    assert not any(p.requires_grad for p in model.encoder.transformer.parameters())


def test_transfer_plan_defaults_and_options(retina_encoder):
    ckpt = load_checkpoint(retina_encoder[0], tensors=False)
    cfg = FineTuneConfig()
    assert plan_transfer(ckpt, cfg) == Transfer(TRANSFORMER, frozen=True)  # the paper's recipe
    assert plan_transfer(ckpt, cfg.replace(freeze="encoder")) == Transfer("encoder")  # more: whole encoder
    # options (FineTuneConfig.transfer): the transformer trained, or the whole encoder
    assert plan_transfer(ckpt, SimpleNamespace(transfer="transformer", freeze="none")) == Transfer(TRANSFORMER)
    assert plan_transfer(ckpt, SimpleNamespace(transfer="encoder", freeze="none")) == Transfer("encoder")


def test_other_encoders_transfer_whole(tmp_path):
    net = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1), head_info("reconstruction"))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "mscon.safetensors", net, card={"method": "mscon"}),
                           tensors=False)
    assert plan_transfer(ckpt, FineTuneConfig()) == Transfer("encoder")
    with pytest.raises(AnnotationError, match="TransUNet"):
        plan_transfer(ckpt, SimpleNamespace(transfer="transformer", freeze="none"))


def test_unfrozen_transformer_trains_at_the_encoder_rate(retina_encoder):
    from napari_emseg.finetune.model_setup import freeze_and_group

    model = build_model(ModelConfig(arch="transunet2d", vit_size="micro", widths=(8, 16, 32)), head_info("bcd"))
    model.transfer = Transfer(TRANSFORMER)
    cfg = FineTuneConfig(lr=1e-3, encoder_lr_scale=0.1)
    rest, enc = freeze_and_group(model, cfg, pretrained=True)
    assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.transformer.parameters()}
    assert enc["lr"] == pytest.approx(1e-4) and rest["lr"] == 1e-3  # the stem is new: full rate
    assert {id(p) for p in model.encoder.stem.parameters()} <= {id(p) for p in rest["params"]}


@pytest.mark.parametrize("inflate", ["centre", "average"])
def test_a_2d_retina_encoder_fine_tunes_a_3d_network_inflated(tiny_em, retina_encoder, inflate):
    path, pretrained = retina_encoder
    lab = np.zeros_like(tiny_em.mitochondria)
    lab[4] = tiny_em.mitochondria[4]
    cfg = FineTuneConfig(task="mitochondria", dims="3d", patch=(4, 32, 32), batch_size=1, steps=2, lr=1e-2,
                         calibrate=False, holdout=False).override([f"inflate={inflate}"])
    result = drain(fine_tune(str(path), tiny_em.raw, lab, cfg, voxel_size=(40.0, 8.0, 8.0)), show=False)
    model = result.model
    assert model.config.arch == "unetr" and model.config.pos_embed == "inplane"
    transplant = load_checkpoint(result.checkpoint, tensors=False).card["transplant"]
    assert transplant["inflated"]["from"] == "transunet2d" and transplant["inflated"]["kernels"] == inflate
    assert transplant["part"] == "encoder.blocks" and transplant["frozen"]  # RETINA: the transformer stays frozen
    src = pretrained.encoder.transformer.state_dict()
    for k, v in model.encoder.blocks.state_dict().items():
        torch.testing.assert_close(v, src[f"blocks.{k}"], msg=k)
    assert model.encoder.patch_embed.proj.weight.requires_grad  # the new patch embedding trains

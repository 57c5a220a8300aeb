"""fine_tune() on the synthetic sample: the loss falls, the checkpoint rebuilds, Cancel keeps it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.finetune.annotations import AnnotationError, find_annotations
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.models import ModelConfig, build_model, load_model
from napari_emseg.models.heads import head_info
from napari_emseg.progress import CancelToken, cancellable, drain

TINY = dict(patch=(4, 32, 32), batch_size=2, validate_every=4, augment=FineTuneConfig().augment)


def tiny_model(target, **info):
    return build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                       head_info(target, tile=(4, 32, 32), **info))


def painted(em, z=(3, 8), what="mitochondria"):
    src = getattr(em, what)
    lab = np.zeros_like(src)
    for zi in z:
        lab[zi] = src[zi]
    return lab


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_mitochondria_loss_falls_and_checkpoint_rebuilds(tiny_em, tmp_path):
    cfg = FineTuneConfig(task="mitochondria", steps=40, lr=3e-3, **TINY)
    events = []
    lab = painted(tiny_em, z=(2, 4, 6, 8))  # four painted slices: the last one is held out
    res = drain(fine_tune(tiny_model("bcd"), tiny_em.raw, lab, cfg, out=tmp_path / "m.safetensors"),
                show=False, callback=events.append)
    losses = [e.metrics["loss"] for e in events if "loss" in e.metrics and e.stage == "fine-tune"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    model = load_model(res.checkpoint)
    assert model.info.target == "bcd" and model.info.channel_names == ("foreground", "contour", "distance")
    x = torch.zeros(1, 1, 4, 32, 32)
    torch.testing.assert_close(model(x), res.model(x))
    assert res.best_metric is not None and res.best_metric > 0  # one held out and scored
    assert any("val_loss" in e.metrics for e in events)  # and the score is reported as progress


def test_neurons_on_isolated_slices_train_boundaries(tiny_em, tmp_path):
    cfg = FineTuneConfig(task="neurons", steps=6, **TINY)
    res = drain(fine_tune("scratch-resunet", tiny_em.raw, painted(tiny_em, what="neurons"),
                          cfg.replace(patch=(4, 32, 32)), out=tmp_path / "n.safetensors"), show=False)
    assert load_model(res.checkpoint).info.target == "boundaries"


def test_cancel_returns_a_usable_checkpoint(tiny_em, tmp_path):
    token = CancelToken()
    seen = []

    def cb(e):
        seen.append(e.step)
        if e.step == 3:
            token.cancel()

    cfg = FineTuneConfig(task="mitochondria", steps=500, **TINY)
    job = fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg, out=tmp_path / "c.safetensors")
    res = drain(cancellable(job, token), show=False, callback=cb)
    assert res.stopped == "cancelled" and res.steps < 10
    assert load_model(res.checkpoint).info.target == "bcd"


def test_a_run_to_its_time_limit_ends_its_progress_at_100_percent(tiny_em, tmp_path):
    """With ``steps=None`` the run trains to the time limit; its last event must not read
    ``12/10000000`` (0 %) in the progress bar."""
    cfg = FineTuneConfig(task="mitochondria", steps=None, time_limit_min=0.03, holdout=False, calibrate=False, **TINY)
    events = []
    res = drain(fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg, out=tmp_path / "t.safetensors"),
                show=False, callback=events.append)
    assert res.stopped == "time_limit" and events[-1].stage == "done"
    assert events[-1].total == events[-1].step == res.steps and events[-1].fraction == 1.0


def test_preview_of_the_current_slice(tiny_em):
    cfg = FineTuneConfig(task="mitochondria", steps=4, preview_every=2, preview_z=5, holdout=False, **TINY)
    events = []
    drain(fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg), show=False, callback=events.append)
    previews = [e.preview for e in events if e.preview is not None]
    assert previews and previews[0]["z"] == 5 and previews[0]["maps"].shape[0] == 3


def test_bad_inputs_get_clear_errors(tiny_em):
    cfg = FineTuneConfig(task="mitochondria", steps=2, **TINY)
    with pytest.raises(AnnotationError, match="all 0"):
        drain(fine_tune(tiny_model("bcd"), tiny_em.raw, np.zeros_like(tiny_em.mitochondria), cfg), show=False)
    with pytest.raises(AnnotationError, match="shape"):
        drain(fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em)[:, :10], cfg), show=False)
    with pytest.raises(AnnotationError, match="predicts"):
        drain(fine_tune(tiny_model("boundaries"), tiny_em.raw, painted(tiny_em), cfg), show=False)


@pytest.mark.parametrize("held", range(4, 12))
def test_every_validation_patch_holds_the_held_out_slice(tiny_em, held):
    """Wherever the held-out slice falls relative to the patch grid, it is scored (a patch that
    misses it would score 0 and freeze 'the best model' at the first validation)."""
    from napari_emseg.finetune.holdout import holdout_validator, split_holdout
    from napari_emseg.finetune.job import MaskedObjective

    patch = (4, 32, 32)
    labels = painted(tiny_em, z=(1, held))
    ann = find_annotations(labels, tiny_em.raw.shape, context=tuple(p // 2 for p in patch))
    img = tiny_em.raw[ann.box].astype(np.float32) / 255.0
    train_ann, val_ann = split_holdout(ann)
    assert val_ann.slices == (held,)
    model = tiny_model("bcd")
    validate = holdout_validator(img, val_ann, "bcd", patch, model, {})
    with torch.no_grad():  # as the trainer calls it
        assert validate is not None and validate(MaskedObjective(model, "bcd").eval(), 0)["val_loss"] > 0

"""live_fine_tune(): strokes added mid-run teach, erased ones stop, the preview follows the view, Stop saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.finetune import live_feed
from napari_emseg.finetune.job import FineTuneConfig
from napari_emseg.finetune.live import LiveConfig, ViewSource, live_fine_tune
from napari_emseg.models import ModelConfig, build_model, load_model
from napari_emseg.models.checkpoint import load_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.progress import CancelToken, cancellable

CFG = FineTuneConfig(patch=(4, 32, 32), batch_size=2, device="cpu")
#: every step re-reads the labels and previews; no calibration unless a test asks
FAST = LiveConfig(reread_every=1, refresh_s=0, calibrate_every_s=0, calibrate_on_stop=False, validate_every=2)


def tiny_model(target, **info):
    return build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                       head_info(target, tile=(4, 32, 32), **info))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def trained_on(monkeypatch):
    """The painted slices of every training batch, in order: (step, slices)."""
    seen: list[tuple[int, tuple[int, ...]]] = []

    class Recording(live_feed.AnnotatedPatches):
        def batch(self, step):
            seen.append((step, tuple(self.ann.slices)))
            return super().batch(step)

    monkeypatch.setattr(live_feed, "AnnotatedPatches", Recording)
    return seen


def run(job, actions):
    """Drive ``job``; ``actions[step]`` runs once after the training event of that step."""
    events = []
    try:
        event = next(job)
        while True:
            events.append(event)
            if event.stage == "live" and event.step in actions:
                actions.pop(event.step)()
            event = next(job)
    except StopIteration as stop:
        return stop.value, events


def test_strokes_teach_erasures_stop_preview_follows_and_stop_saves(tiny_em, tmp_path, trained_on):
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[3] = tiny_em.mitochondria[3]
    view, token = ViewSource(3), CancelToken()

    def paint_8():
        labels[8] = tiny_em.mitochondria[8]
        view.set(8, (40.0, 50.0))

    def erase_3():
        labels[3] = 0

    job = live_fine_tune(tiny_model("bcd"), tiny_em.raw, labels, CFG.replace(task="mitochondria"), FAST,
                         view=view, out=tmp_path / "live.safetensors")
    res, events = run(cancellable(job, token), {3: paint_8, 7: erase_3, 11: token.cancel})

    before = {s for step, s in trained_on if step < 3}
    assert before == {(3,)}  # only the first slice taught
    assert {s for step, s in trained_on if 3 <= step < 7} == {(3, 8)}  # the new slice teaches from the next step
    assert {s for step, s in trained_on if step >= 7} == {(8,)}  # the erased one no longer does
    previews = [e.preview for e in events if e.preview is not None]
    assert [p["z"] for p in previews[:3]] == [3, 3, 3] and previews[-1]["z"] == 8  # the preview follows the view
    p = previews[-1]
    assert p["maps"].shape[:2] == (3, 1) and p["labels"].shape == p["maps"].shape[1:]
    assert p["version"] == 3 and p["steps_on_version"] >= 0

    assert res.stopped == "cancelled" and res.steps == 11
    model = load_model(res.checkpoint)
    assert model.info.target == "bcd"
    card = load_checkpoint(res.checkpoint, tensors=False).card
    changes = [h for h in card["live"]["history"] if h["event"] == "labels"]
    assert [(h["added"], h["erased"]) for h in changes] == [([3], []), ([8], []), ([], [3])]
    assert [h["step"] for h in changes] == [0, 3, 7] and card["annotated"]["slices"] == [8]
    assert card["live"]["kept"] == "best" and card["live"]["best_step"] >= 7  # scored on the current labels


def test_waits_for_paint(tiny_em, tmp_path):
    labels = np.zeros_like(tiny_em.mitochondria)
    reads = {"n": 0}

    def current():  # the painter starts after a few reads
        reads["n"] += 1
        if reads["n"] == 3:
            labels[5] = tiny_em.mitochondria[5]
        return labels

    job = live_fine_tune(tiny_model("bcd"), tiny_em.raw, current, CFG.replace(task="mitochondria", steps=4),
                         FAST.replace(poll_s=0.01), out=tmp_path / "w.safetensors")
    res, events = run(job, {})
    assert [e.stage for e in events[:2]] == ["waiting", "waiting"] and "no annotations" in events[0].message
    assert res.steps == 4 and res.stopped == "max_steps"


def test_pause_then_resume(tiny_em, tmp_path, trained_on):
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[5] = tiny_em.mitochondria[5]
    reads = {"paused": 0}
    live = FAST.replace(poll_s=0.01)

    job = live_fine_tune(tiny_model("bcd"), tiny_em.raw, lambda: labels, CFG.replace(task="mitochondria", steps=5),
                         live, out=tmp_path / "p.safetensors")
    events = []
    try:
        event = next(job)
        while True:
            events.append(event)
            if event.stage == "live" and event.step == 2 and not reads["paused"]:
                labels[:] = 0  # everything erased: training waits
            if event.stage == "waiting" and event.step == 2:
                reads["paused"] += 1
                if reads["paused"] == 3:
                    labels[6] = tiny_em.mitochondria[6]  # painted again: training resumes
            event = next(job)
    except StopIteration as stop:
        res = stop.value
    assert reads["paused"] >= 3 and res.steps == 5
    assert {s for step, s in trained_on if step < 2} == {(5,)}
    assert {s for step, s in trained_on if step >= 2} == {(6,)}
    history = load_checkpoint(res.checkpoint, tensors=False).card["live"]["history"]
    assert [h["event"] for h in history if h["event"] != "calibrated"] == ["labels", "paused", "labels"]


@pytest.mark.parametrize("task, mode, what, target", [
    ("neurons", "scribbles", "neurons", "boundaries"),
    ("semantic", "dense", "mitochondria", "semantic"),
])
def test_neurons_scribbles_and_semantic(tiny_em, tmp_path, task, mode, what, target):
    labels = np.zeros_like(tiny_em.neurons)
    src = getattr(tiny_em, what)
    if mode == "scribbles":  # a few objects and some background on one slice
        labels[4, 10:30, 10:30] = 1
        for obj in np.unique(src[4])[1:4]:
            labels[4][src[4] == obj] = obj + 1
    else:
        labels[4] = (src[4] > 0).astype(labels.dtype)
    info = {"n_classes": 2} if task == "semantic" else {}
    cfg = CFG.replace(task=task, mode=mode, steps=3, n_classes=2 if task == "semantic" else None)
    res, events = run(live_fine_tune(tiny_model(target, **info), tiny_em.raw, labels, cfg, FAST,
                                     view=lambda: 4, out=tmp_path / f"{task}.safetensors"), {})
    assert res.steps == 3 and load_model(res.checkpoint).info.target == target
    assert any(e.preview is not None and e.preview["z"] == 4 for e in events)


def test_stop_calibrates_and_quick_calibrations_feed_the_preview(tiny_em, tmp_path):
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[3] = tiny_em.mitochondria[3]
    live = FAST.replace(calibrate_every_s=1e-6, calibrate_on_stop=True, calibrate_voxels=20_000)
    res, events = run(live_fine_tune(tiny_model("bcd"), tiny_em.raw, labels, CFG.replace(task="mitochondria", steps=2),
                                     live, view=ViewSource(3), out=tmp_path / "c.safetensors"), {})
    card = load_checkpoint(res.checkpoint, tensors=False).card
    calibrations = [h for h in card["live"]["history"] if h["event"] == "calibrated"]
    assert [c["final"] for c in calibrations] == [False, True]  # one quick while live (labels changed once)
    assert card["postprocess"]["target"] == "bcd" and "config" in card["postprocess"]
    assert any(e.stage == "calibrate" for e in events)


def test_automatic_settings_are_smaller_on_the_cpu():
    cpu, gpu = LiveConfig().resolved(torch.device("cpu")), LiveConfig().resolved(torch.device("cuda"))
    assert cpu.preview_side < gpu.preview_side and cpu.refresh_s > gpu.refresh_s and cpu.neighbours == 0


def test_slow_previews_shrink_then_slow_down(tiny_em, tmp_path, monkeypatch):
    from napari_emseg.finetune import live as live_mod

    real = live_mod.predict_window
    sides = []

    def slow(*args, **kwargs):
        sides.append(kwargs["side"])
        import time

        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(live_mod, "predict_window", slow)
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[3] = tiny_em.mitochondria[3]
    live = FAST.replace(refresh_s=0.01, preview_side=256, min_side=128)  # any preview is over budget
    res, events = run(live_fine_tune(tiny_model("bcd"), tiny_em.raw, labels, CFG.replace(task="mitochondria", steps=6),
                                     live, out=tmp_path / "s.safetensors"), {})
    assert sides[:3] == [256, 192, 144] and min(sides) == 128
    assert res.refresh_s > 0.01  # at the smallest window the refresh slows instead


def test_fine_tune_live_is_the_live_loop(tiny_em, tmp_path):
    from napari_emseg.finetune.job import fine_tune
    from napari_emseg.finetune.live import LiveResult

    labels = np.zeros_like(tiny_em.mitochondria)
    labels[3] = tiny_em.mitochondria[3]
    res, _ = run(fine_tune(tiny_model("bcd"), tiny_em.raw, labels, CFG.replace(task="mitochondria", steps=2),
                           out=tmp_path / "f.safetensors", live=FAST, view=lambda: 3), {})
    assert isinstance(res, LiveResult) and res.steps == 2 and res.previews == 2


def test_preview_of_a_resampled_crop_is_on_the_image_grid(tiny_em, tmp_path):
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[3] = tiny_em.mitochondria[3]
    fine = tiny_model("bcd", voxel_size=(40.0, 4.0, 4.0))  # trained at half the image's pixel size
    res, events = run(live_fine_tune(fine, tiny_em.raw, labels, CFG.replace(task="mitochondria", steps=1), FAST,
                                     view=lambda: (3, (20.0, 30.0)), voxel_size=(40.0, 8.0, 8.0),
                                     out=tmp_path / "r.safetensors"), {})
    p = next(e.preview for e in events if e.preview is not None)
    assert p["maps"].shape[-2:] == (96, 96) and p["offset"] == (0, 0) and p["labels"].shape == (1, 96, 96)
    assert load_checkpoint(res.checkpoint, tensors=False).card["voxel_size_match"]["resample"]

"""Calibrated by default: thresholds tuned on the painted slices after fine-tuning, stored, guarded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_emseg.calibration import CALIBRATED, resolve_postprocess, stored_postprocess
from napari_emseg.data.normalize import NormConfig
from napari_emseg.finetune.calibrate import (
    CALIBRATION_GRIDS,
    calibrate_postprocess,
    choose_setting,
    objects_touch,
)
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.models import load_checkpoint, load_model
from napari_emseg.models.info import ModelInfo
from napari_emseg.postprocess import MitoConfig, NeuronConfig, extract_instances
from napari_emseg.progress import CancelToken, cancellable, drain

from .test_job import TINY, painted, tiny_model


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


class SquashedBCD(nn.Module):
    """An under-confident mitochondria model: foreground read from the image (squeezed into
    [0.15, 0.65]), a flat contour and a weak distance map. No seed passes the default 0.9."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(task="mitochondria", target="bcd", channel_names=("foreground", "contour", "distance"),
                              activation="none", input_multiple=(1, 8, 8), tile=(4, 32, 32),
                              norm=NormConfig(lo=0.0, hi=255.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x + 1) / 2
        return torch.cat([fg, torch.full_like(fg, 0.1), 0.3 * fg], dim=1)


def squashed_image(mito: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fg = np.clip(0.15 + 0.5 * (mito > 0) + rng.normal(0, 0.02, mito.shape), 0, 1)
    return np.round(255 * fg).astype(np.uint8)


def test_defaults_that_find_nothing_are_never_kept(tiny_em):
    model = SquashedBCD()
    image = squashed_image(tiny_em.mitochondria)
    res = calibrate_postprocess(model, image, painted(tiny_em))
    assert res.config is not None and res.metric == "ap" and res.slices == (3, 8) and res.folds == 2
    assert res.default_objects == 0 and res.objects > 0 and res.choice != "defaults"
    assert res.score > res.default_score == 0.0
    assert res.cv_score is not None and res.cv_score > res.cv_default_score  # it generalises to the held-out slice
    # the chosen setting works on the whole volume, where the defaults find nothing
    maps = model(torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[None, None])[0].detach().numpy()
    assert extract_instances(maps, "bcd", MitoConfig()).max() == 0
    assert extract_instances(maps, "bcd", res.config).max() > 0
    card = res.to_card()
    assert card["source"] == CALIBRATED and card["config"] == res.config.to_dict() and card["default_objects"] == 0
    assert next(model.parameters()).device.type == "cpu" and model.info.norm.lo == 0.0  # model left as it was


def test_one_painted_slice_is_split_in_halves_for_the_held_out_check(tiny_em):
    res = calibrate_postprocess(SquashedBCD(), squashed_image(tiny_em.mitochondria), painted(tiny_em, z=(5,)))
    assert res.slices == (5,) and res.folds == 2 and res.objects > 0


def test_a_bounded_window_around_the_painted_objects(tiny_em):
    res = calibrate_postprocess(SquashedBCD(), squashed_image(tiny_em.mitochondria), painted(tiny_em), max_side=64)
    assert res.window == (64, 64) and res.objects > 0 and res.choice != "defaults"


def test_held_out_choice_keeps_the_defaults_when_tuning_only_fits():
    # row 0 = defaults; row 1 scores best on fold 0 only, row 2 on fold 1 only (higher is better)
    scores = [[0.50, 0.50], [0.90, 0.10], [0.10, 0.90]]
    out = choose_setting(scores, [0, 1, 1], [5, 5, 5], lower_is_better=False)
    assert out["index"] == 0 and out["choice"] == "defaults"
    assert out["cv_score"] == pytest.approx(0.1) and out["cv_default_score"] == pytest.approx(0.5)
    # a setting better on every slice is taken
    out = choose_setting([[0.5, 0.5], [0.7, 0.8]], [0, 1], [5, 5], lower_is_better=False)
    assert out["index"] == 1 and out["choice"] == "calibrated"


def test_near_ties_go_to_the_setting_closest_to_the_defaults():
    scores = [[0.20, 0.20], [0.105, 0.105], [0.10, 0.10]]  # lower is better; rows 1 and 2 within 0.01
    out = choose_setting(scores, [0, 0.2, 1.0], [9, 9, 9], lower_is_better=True, tolerance=0.01)
    assert out["index"] == 1


def test_zero_object_fallback():
    # the defaults tie on held-out scores but find no object: the best setting that finds some is used
    out = choose_setting([[0.0, 0.0], [0.0, 0.0], [0.3, 0.0]], [0, 1, 2], [0, 3, 4], lower_is_better=False)
    assert out["cv_score"] == out["cv_default_score"] == 0.0  # held out, tuning did not beat the defaults
    assert out["index"] == 2 and out["choice"] == "calibrated (the defaults find no objects)"
    # ... among settings that find objects, the near-best closest to the defaults
    out = choose_setting([[0.0, 0.0], [0.0, 0.0], [0.005, 0.0]], [0, 1, 2], [0, 3, 4], lower_is_better=False)
    assert out["index"] == 1


def test_fine_tune_stores_the_calibration_in_the_checkpoint(tiny_em, tmp_path):
    cfg = FineTuneConfig(task="mitochondria", steps=6, **TINY)
    events = []
    res = drain(fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg, out=tmp_path / "m.safetensors"),
                show=False, callback=events.append)
    assert any(e.stage == "calibrate" for e in events)
    card = load_checkpoint(res.checkpoint, tensors=False).card
    entry = card["postprocess"]
    assert entry["source"] == CALIBRATED and entry["target"] == "bcd" and entry["metric"] == "ap"
    # no two painted mitochondria touch: only the split-free settings (3 foreground thresholds x 3 sizes)
    assert entry["slices"] == [3, 8] and entry["folds"] == 2 and entry["settings"] == 9
    assert entry["config"]["split"] is False
    assert {"score", "default_score", "cv_score", "cv_default_score", "objects", "default_objects"} <= set(entry)
    cfg_stored, source = stored_postprocess(card, "bcd")
    assert cfg_stored == MitoConfig.from_dict(entry["config"]) and source["source"] == CALIBRATED
    assert not (entry["default_objects"] == 0 and entry["objects"] == 0 and entry["choice"] != "defaults")
    # and switched off
    res = drain(fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg.replace(calibrate=False),
                          out=tmp_path / "off.safetensors"), show=False)
    assert "postprocess" not in load_checkpoint(res.checkpoint, tensors=False).card


def test_neurons_are_calibrated_for_arand(tiny_em, tmp_path):
    cfg = FineTuneConfig(task="neurons", steps=4, **TINY)
    res = drain(fine_tune(tiny_model("boundaries"), tiny_em.raw, painted(tiny_em, what="neurons"), cfg,
                          out=tmp_path / "n.safetensors"), show=False)
    entry = load_checkpoint(res.checkpoint, tensors=False).card["postprocess"]
    assert entry["metric"] == "arand" and entry["target"] == "boundaries"
    assert isinstance(stored_postprocess({"postprocess": entry}, "boundaries")[0], NeuronConfig)


def test_cancel_during_calibration_still_saves_the_model(tiny_em, tmp_path):
    token = CancelToken()

    def cb(e):
        if e.stage == "calibrate":
            token.cancel()

    cfg = FineTuneConfig(task="mitochondria", steps=3, **TINY)
    job = fine_tune(tiny_model("bcd"), tiny_em.raw, painted(tiny_em), cfg, out=tmp_path / "c.safetensors")
    res = drain(cancellable(job, token), show=False, callback=cb)
    assert res.checkpoint.is_file() and load_model(res.checkpoint).info.target == "bcd"
    card = load_checkpoint(res.checkpoint, tensors=False).card
    assert card["postprocess"]["skipped"] == "cancelled"
    assert stored_postprocess(card, "bcd") is None  # segment falls back to the defaults
    assert resolve_postprocess(card, "bcd")[1]["source"] == "defaults"


def test_resolution_rules():
    stored = {"postprocess": {"target": "bcd", "config": MitoConfig(seed_distance=0.1).to_dict(),
                              "source": CALIBRATED, "metric": "ap", "score": 0.4, "default_score": 0.0}}
    cfg, src = resolve_postprocess(stored, "bcd")
    assert cfg.seed_distance == 0.1 and src["source"] == CALIBRATED and src["score"] == 0.4
    cfg, src = resolve_postprocess(stored, "bcd", MitoConfig())  # the defaults count as none given
    assert cfg.seed_distance == 0.1
    cfg, src = resolve_postprocess(stored, "bcd", MitoConfig(min_size=7))  # a user's config wins whole
    assert cfg == MitoConfig(min_size=7) and src == {"source": "user"}
    cfg, src = resolve_postprocess(stored, "bcd", overrides=["min_size=7"])  # one field changed, others calibrated
    assert cfg.seed_distance == 0.1 and cfg.min_size == 7 and src["base"] == CALIBRATED
    cfg, src = resolve_postprocess(stored, "bcd", use_calibration=False)
    assert cfg == MitoConfig()
    assert resolve_postprocess(stored, "boundaries")[0] == NeuronConfig()  # another target: not used
    legacy = {"postprocess": {"target": "bcd", **MitoConfig(min_size=3).to_dict()}}  # older (bundled) cards
    assert resolve_postprocess(legacy, "bcd")[0].min_size == 3


class StripedBCD(nn.Module):
    """A confident foreground whose distance map has a ridge every 8 voxels along x: seeds cut
    every mitochondrion into bands, so only ``split=False`` (one object per connected piece) is right."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = SquashedBCD().info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x + 1) / 2
        fg = ((v - 0.3) * 10).clamp(0, 1)
        return torch.cat([fg, torch.full_like(fg, 0.1), fg * ((v - 0.5) * 2).clamp(0, 1)], dim=1)


def striped_image(mito: np.ndarray) -> np.ndarray:
    x = np.arange(mito.shape[-1])
    stripe = (1 + np.cos(2 * np.pi * x / 8)) / 2
    return np.where(mito > 0, 128 + 127 * stripe, 0).astype(np.uint8)


def test_calibration_stops_splitting_when_the_seeds_cut_objects(tiny_em):
    image = striped_image(tiny_em.mitochondria)
    maps = StripedBCD()(torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[None, None])[0].detach().numpy()
    assert extract_instances(maps, "bcd", MitoConfig()).max() > 1.5 * np.unique(tiny_em.mitochondria).size
    # the whole grid (as when painted objects touch): the held-out check finds that seeds cut objects
    res = calibrate_postprocess(StripedBCD(), image, painted(tiny_em), grid=CALIBRATION_GRIDS["mitochondria"])
    assert res.config.split is False and res.choice != "defaults"
    assert res.cv_score > res.cv_default_score and res.score > 0.8
    # settings that differ only in seed thresholds the split-free setting ignores are built once
    assert sum(not r["split"] for r in res.table) == 3 * 3  # foreground thresholds x min sizes


class SectionBCD(nn.Module):
    """A confident mitochondria model whose maps are the image itself (foreground = distance)."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = SquashedBCD().info.replace(spatial_dims=spatial_dims,
                                               tile=(1, 32, 32) if spatial_dims == 2 else (4, 32, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x + 1) / 2
        return torch.cat([fg, torch.full_like(fg, 0.1), fg], dim=1)


def bridged_sections() -> tuple[np.ndarray, np.ndarray]:
    """Even sections hold two separate mitochondria; odd ones a bar that touches both."""
    image = np.zeros((12, 96, 96), np.uint8)
    truth = np.zeros(image.shape, np.uint32)
    for z in range(12):
        if z % 2:
            image[z, 30:50, 10:80] = 255
        else:
            image[z, 30:50, 10:35] = image[z, 30:50, 55:80] = 255
            truth[z, 30:50, 10:35], truth[z, 30:50, 55:80] = 2 * z + 1, 2 * z + 2
    return image, truth


@pytest.mark.parametrize("dims", [2, 3])
def test_a_2d_model_on_sections_gets_mitochondria_per_section(dims):
    image, truth = bridged_sections()
    labels = np.zeros_like(truth)
    labels[[4, 8]] = truth[[4, 8]]
    model = SectionBCD(dims)
    maps = model(torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[None, None])[0].detach().numpy()
    assert np.unique(extract_instances(maps, "bcd", MitoConfig())[4]).size - 1 == 1  # 3D joins the two
    res = calibrate_postprocess(model, image, labels, voxel_size=(50.0, 5.0, 5.0))
    if dims == 2:  # predicted section by section: extracted per section, two objects in each even section
        assert res.config.mode == "linked" and res.score == pytest.approx(1.0)
        per_section = extract_instances(maps, "bcd", res.config)
        assert all(np.unique(per_section[z]).size - 1 == 2 for z in range(0, 12, 2))
        assert np.unique(per_section).size - 1 < 18  # profiles still joined across sections (18 in all)
    else:  # a 3D model keeps volumetric objects
        assert res.config.mode == "3d"
    # near-isotropic voxels (and >= 32 slices): a 2D model runs on ortho planes there, and 3D objects are kept
    deep, lab = np.tile(image, (3, 1, 1)), np.tile(labels, (3, 1, 1))
    assert calibrate_postprocess(SectionBCD(2), deep, lab, voxel_size=(5.0, 5.0, 5.0)).config.mode == "3d"


def test_seeds_are_only_tried_when_painted_mitochondria_touch(tiny_em):
    apart = np.zeros((2, 20, 20), np.int64)
    apart[0, 2:6, 2:6], apart[0, 7:10, 2:6], apart[1, 2:6, 2:6] = 1, 2, 3  # a one-pixel gap
    assert not objects_touch(apart)
    touching = apart.copy()
    touching[0, 6, 2:6] = 1  # now 1 and 2 share a face
    assert objects_touch(touching)
    # tiny_em's painted mitochondria never touch: seeds are not searched and the stored setting does not split
    image = striped_image(tiny_em.mitochondria)
    res = calibrate_postprocess(StripedBCD(), image, painted(tiny_em))
    assert res.config.split is False and all(not r["split"] for r in res.table) and res.settings == 9


def test_linked_mitochondria_are_size_filtered_as_segment_does():
    """A 2D model on sections: the size filter is calibrated on profiles joined through the
    sections, so a small end profile painted in one section does not buy one-section specks."""
    image = np.zeros((12, 96, 96), np.uint8)
    truth = np.zeros(image.shape, np.uint32)
    image[2:6, 10:30, 10:30] = 255  # a mitochondrion through sections 2-5 ...
    image[6, 16:22, 16:22] = 255  # ... ending in a 36-pixel profile in section 6
    truth[2:7][image[2:7] > 0] = 1
    image[:, 60:80, 60:80] = 255  # one through every section
    truth[:, 60:80, 60:80] = 2
    for z in (1, 9, 11):  # specks of 64 pixels in single sections
        image[z, 40:48, 80:88] = 255
    labels = np.zeros_like(truth)
    labels[6] = truth[6]
    model = SectionBCD(2)
    res = calibrate_postprocess(model, image, labels, voxel_size=(50.0, 5.0, 5.0))
    assert res.config.mode == "linked" and res.score == pytest.approx(1.0)
    assert res.config.min_size == MitoConfig().min_size  # the end profile belongs to a large object
    maps = model(torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[None, None])[0].detach().numpy()
    seg = extract_instances(maps, "bcd", res.config)
    assert np.unique(seg).size - 1 == 2 and not seg[[1, 9, 11], 40:48, 80:88].any()  # no specks
    assert seg[6, 16:22, 16:22].all()  # the end profile is kept
    # scored on section 6 alone, the filter would have to drop to keep the end profile
    alone = extract_instances(maps[:, 6:7], "bcd", MitoConfig(mode="linked", split=False))
    assert not alone[0, 16:22, 16:22].any()

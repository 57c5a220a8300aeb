"""Voxel-size matching: lazy blockwise resampling, the plan, segment_job and fine_tune resampling."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
import zarr
from scipy.ndimage import zoom

from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.inference import InferenceConfig
from napari_emseg.models import ModelConfig, build_model, load_model, save_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.postprocess.mitochondria import MitoConfig
from napari_emseg.progress import drain
from napari_emseg.resample import (
    MODEL_GRID_SUFFIX,
    Resampled,
    VoxelMatchConfig,
    describe_voxel_sizes,
    log_plan,
    plan_voxel_match,
    resample_labels,
    voxel_size_of,
)
from napari_emseg.workflows import SegmentConfig, segment_job

LOOSE = MitoConfig(min_size=0, min_seed_size=1, seed_foreground=0.0, seed_contour=1.0, seed_distance=0.0,
                   foreground_threshold=0.0)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def tiny_bcd(voxel_size=None):
    return build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1),
                       head_info("bcd", tile=(4, 32, 32), voxel_size=voxel_size))


def test_blockwise_reads_equal_one_whole_resampling():
    rng = np.random.default_rng(0)
    x = rng.random((6, 30, 34)).astype(np.float32)
    up = Resampled(x, (16, 16, 16), (8, 8, 8))
    assert up.shape == (12, 60, 68)
    whole = up[...]
    # pixel-area geometry: the same as scipy's zoom in grid mode
    np.testing.assert_allclose(whole, zoom(x, 2, order=1, mode="nearest", grid_mode=True), atol=1e-6)
    np.testing.assert_array_equal(up.to_dask((5, 7, 11)).compute(), whole)
    down = Resampled(x, (8, 8, 8), (20, 20, 20))  # anti-aliased: the filter's halo is read too
    assert down.shape == (2, 12, 14)
    np.testing.assert_array_equal(down.to_dask((1, 5, 3)).compute(), down[...])
    assert down[1, 3:5, 7].shape == (2,)
    # channels ride along; integers stay integers
    u8 = (x * 255).astype(np.uint8)[None].repeat(2, 0)
    r = Resampled(u8, (16, 16, 16), (8, 8, 8))
    assert r.shape == (2, 12, 60, 68) and r[...].dtype == np.uint8


def test_labels_nearest_keep_ids_and_round_trip():
    lab = np.random.default_rng(1).integers(0, 7, (5, 20, 24)).astype(np.uint32)
    up = resample_labels(lab, (16, 16, 16), (8, 8, 8))
    assert up.dtype == np.uint32 and set(np.unique(up)) == set(np.unique(lab))
    np.testing.assert_array_equal(resample_labels(up, (8, 8, 8), (16, 16, 16), shape=lab.shape), lab)


def test_plan_tolerance_switch_and_sanity_limit():
    p = plan_voxel_match((8, 8, 8), (16, 16, 16))
    assert p.resample and p.zoom == (2, 2, 2) and p.target_shape((10, 20, 30)) == (20, 40, 60)
    assert not plan_voxel_match((8, 8, 8), (9, 8, 7.5)).resample  # within 20 %
    assert plan_voxel_match((8, 8, 8), (9, 8, 7.5), VoxelMatchConfig(tolerance=0.1)).resample
    assert not plan_voxel_match((8, 8, 8), (16, 16, 16), VoxelMatchConfig(enabled=False)).resample
    assert not plan_voxel_match(None, (16, 16, 16)).resample
    assert not plan_voxel_match((8, 8, 8), None).resample
    bogus = plan_voxel_match((50, 4, 4), (1, 1, 1))  # napari's default scale: not a real size
    assert not bogus.resample and "not set" in bogus.reason
    only_xy = plan_voxel_match((40, 8, 8), (45, 16, 16))  # z within tolerance: left alone
    assert only_xy.target_voxel_size == (45, 8, 8) and only_xy.zoom == (1, 2, 2)
    kept = plan_voxel_match((8, 8, 8), (16, 16, 16), keep_axes=(0,))
    assert kept.target_voxel_size == (16, 8, 8)
    text = describe_voxel_sizes((8, 8, 8), (16, 16, 16))
    assert "model 8 x 8 x 8 nm" in text and "image 16 x 16 x 16 nm" in text and "resampling" in text


def test_voxel_size_of_models_checkpoints_and_catalogue(tmp_path):
    net = tiny_bcd((8.0, 8.0, 8.0))
    assert voxel_size_of(net) == (8, 8, 8)
    path = save_checkpoint(tmp_path / "m.safetensors", net)
    assert voxel_size_of(path) == (8, 8, 8)
    assert voxel_size_of("scratch-resunet") is None
    assert voxel_size_of("no-such-encoder") is None


def test_segment_resamples_to_the_model_and_back(tiny_em, tmp_path, caplog):
    ckpt = save_checkpoint(tmp_path / "m8.safetensors", tiny_bcd((8.0, 8.0, 8.0)))
    image = tiny_em.raw[:6, :48, :40]
    cfg = SegmentConfig(inference=InferenceConfig(device="cpu", block=(8, 64, 64)), mitochondria=LOOSE)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.resample"):
        seg = drain(segment_job(ckpt, image, cfg, out=tmp_path / "s.zarr", voxel_size=(16.0, 16.0, 16.0)), show=False)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "8 x 8 x 8 nm" in warning and "16 x 16 x 16 nm" in warning
    grid = zarr.open_array(str(tmp_path / "s.zarr" / f"predictions{MODEL_GRID_SUFFIX}"), mode="r")
    assert grid.shape == (3, 12, 96, 80)  # the model saw the image at 8 nm
    pred = zarr.open_array(str(tmp_path / "s.zarr" / "predictions"), mode="r")
    assert pred.shape == (3, *image.shape) and pred.attrs["resolution"] == [16, 16, 16]
    assert pred.attrs["voxel_size_match"]["resample"] is True
    assert seg.labels.shape == image.shape and seg.labels.max() >= 1  # labels on the input grid
    # back on the input grid, the maps are the model-grid maps averaged 2 x 2 x 2 (nearly)
    coarse = grid[:].astype(np.float32).reshape(3, 6, 2, 48, 2, 40, 2).mean(axis=(2, 4, 6))
    assert np.abs(pred[:].astype(np.float32) - coarse).mean() < 0.02

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="napari_emseg.resample"):
        same = drain(segment_job(ckpt, image, cfg, out=tmp_path / "t.zarr", voxel_size=(9.0, 8.0, 7.0)), show=False)
    assert not caplog.records and not (tmp_path / "t.zarr" / f"predictions{MODEL_GRID_SUFFIX}").exists()
    assert same.predictions.shape == (3, *image.shape)
    off = cfg.replace(voxel_match=VoxelMatchConfig(enabled=False))
    drain(segment_job(ckpt, image, off, out=tmp_path / "u.zarr", voxel_size=(16.0, 16.0, 16.0)), show=False)
    assert not (tmp_path / "u.zarr" / f"predictions{MODEL_GRID_SUFFIX}").exists()


def test_fine_tune_resamples_the_crop_and_records_its_grid(tiny_em, tmp_path, caplog):
    labels = np.zeros_like(tiny_em.mitochondria)
    labels[[3, 8]] = tiny_em.mitochondria[[3, 8]]
    cfg = FineTuneConfig(task="mitochondria", steps=2, patch=(4, 32, 32), validate_every=1)
    with caplog.at_level(logging.INFO):
        res = drain(fine_tune(tiny_bcd((40.0, 8.0, 8.0)), tiny_em.raw, labels, cfg, out=tmp_path / "f.safetensors",
                              voxel_size=(40.0, 16.0, 16.0)), show=False)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "40 x 8 x 8 nm" in text and "40 x 16 x 16 nm" in text
    crops = re.search(r"resampled from \((\d+), 96, 96\) to \((\d+), 192, 192\)", text)
    assert crops and crops[1] == crops[2]  # painted z-slices kept, y and x doubled
    assert load_model(res.checkpoint).info.voxel_size == (40, 8, 8)
    plain = drain(fine_tune(tiny_bcd((40.0, 8.0, 8.0)), tiny_em.raw, labels,
                            cfg.replace(voxel_match=VoxelMatchConfig(enabled=False)),
                            out=tmp_path / "g.safetensors", voxel_size=(40.0, 16.0, 16.0)), show=False)
    assert load_model(plain.checkpoint).info.voxel_size == (40, 16, 16)  # trained on the image's grid


def test_switched_off_matching_warns_only_when_the_sizes_differ(caplog):
    off = VoxelMatchConfig(enabled=False)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.resample"):
        log_plan(plan_voxel_match((40, 8, 8), (40, 8, 8), off))
        assert "differ" not in caplog.text  # the same sizes: nothing to warn about
        log_plan(plan_voxel_match((50, 4, 4), (40, 8, 8), off))
    assert "voxel sizes differ (model trained at 50 x 4 x 4 nm, image at 40 x 8 x 8 nm)" in caplog.text

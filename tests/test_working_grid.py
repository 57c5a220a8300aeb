"""The working grid: wide painted objects make fine-tuning train (and segment predict) on a coarser grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_emseg.finetune.annotations import find_annotations
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.working_grid import painted_object_diameter, working_plan
from napari_emseg.inference import InferenceConfig
from napari_emseg.models import load_model
from napari_emseg.progress import drain
from napari_emseg.resample import MODEL_GRID_SUFFIX, VoxelMatchConfig, plan_voxel_match
from napari_emseg.workflows import SegmentConfig, segment_job


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def discs(n_slices=3, side=128, radius=25, seed=0):
    """Dark discs of ``radius`` px on a noisy background, and their instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    labels = np.zeros((n_slices, side, side), np.int64)
    for z in range(n_slices):
        for k, (cy, cx) in enumerate([(32, 32), (32, 96), (96, 64)], start=1):
            cy, cx = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
            labels[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    image = (180 - 100 * (labels > 0) + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
    return image, labels


def test_painted_object_diameter_skips_objects_cut_by_the_painted_region():
    _, labels = discs(radius=20)
    ann = find_annotations(labels, labels.shape, mode="dense")
    assert painted_object_diameter(ann) == pytest.approx(40, rel=0.05)
    scribbles = np.zeros_like(labels)
    scribbles[1, :64, :] = np.where(labels[1, :64, :] > 0, labels[1, :64, :] + 1, 1)  # top half, 1 = background
    ann = find_annotations(scribbles, labels.shape, mode="scribbles", background_label=1)
    assert painted_object_diameter(ann) == pytest.approx(40, rel=0.05)  # the disc the edge cuts is not counted
    scribbles[1, :50, :] = 0  # now every painted object is cut by the region's edge
    ann = find_annotations(scribbles, labels.shape, mode="scribbles", background_label=1)
    assert painted_object_diameter(ann) is None


def test_working_plan_only_where_the_voxel_sizes_cannot_decide():
    _, labels = discs(radius=25)  # 50 px across: twice the working size
    ann = find_annotations(labels, labels.shape, mode="dense")
    undecided = plan_voxel_match(None, (50, 4, 4))  # a scratch encoder records no voxel size
    plan = working_plan(undecided, ann, kind="bcd", dims=2, object_px=25, tolerance=0.2, image_voxel_size=(50, 4, 4))
    assert plan.resample and plan.unit == "nm" and plan.zoom[0] == 1
    assert plan.target_voxel_size[1] == pytest.approx(8, rel=0.05) and "50 px across" in plan.reason
    unknown = working_plan(plan_voxel_match(None, None), ann, kind="bcd", dims=2, object_px=25, tolerance=0.2,
                           image_voxel_size=None)
    assert unknown.unit == "px" and unknown.zoom[1] == pytest.approx(0.5, rel=0.05)
    kwargs = dict(object_px=25, tolerance=0.2, image_voxel_size=(50, 4, 4))
    decided = plan_voxel_match((50, 4.2, 4.2), (50, 4, 4))  # both sizes known, within the tolerance
    assert working_plan(decided, ann, kind="bcd", dims=2, **kwargs) is decided
    assert working_plan(undecided, ann, kind="boundaries", dims=2, **kwargs) is undecided
    assert working_plan(undecided, ann, kind="bcd", dims=3, **kwargs) is undecided
    assert working_plan(undecided, ann, kind="bcd", dims=2, **{**kwargs, "object_px": None}) is undecided
    small = working_plan(undecided, ann, kind="bcd", dims=2, **{**kwargs, "object_px": 45})
    assert small is undecided  # 50 / 45 is within the tolerance: the image's grid


def test_model_zoom_applies_only_where_a_voxel_size_is_unknown():
    px = plan_voxel_match((50, 8, 8), None, model_zoom=(1, 0.5, 0.5))
    assert px.resample and px.unit == "px" and px.target_shape((3, 100, 100)) == (3, 50, 50)
    nm = plan_voxel_match((50, 8, 8), (50, 4, 4), model_zoom=(1, 0.25, 0.25))
    assert nm.unit == "nm" and nm.target_voxel_size == (50, 8, 8)  # known sizes win
    assert not plan_voxel_match(None, None, VoxelMatchConfig(enabled=False), model_zoom=(1, 0.5, 0.5)).resample


def test_fine_tune_trains_and_segment_predicts_on_the_working_grid(tmp_path):
    image, labels = discs(radius=25)
    cfg = FineTuneConfig(task="mitochondria", steps=2, patch=(1, 64, 64), batch_size=2, dims="2d", calibrate=False)
    known = drain(fine_tune("scratch-unet2d", image, labels, cfg, out=tmp_path / "k.safetensors",
                            voxel_size=(50.0, 4.0, 4.0)), show=False)
    info = load_model(known.checkpoint).info
    assert info.voxel_size[0] == 50 and info.voxel_size[1] == pytest.approx(8, rel=0.05)
    assert info.input_zoom[1] == pytest.approx(0.5, rel=0.05)

    native = drain(fine_tune("scratch-unet2d", image, labels, cfg.replace(object_px=None),
                             out=tmp_path / "n.safetensors", voxel_size=(50.0, 4.0, 4.0)), show=False)
    assert load_model(native.checkpoint).info.voxel_size == (50, 4, 4)
    assert load_model(native.checkpoint).info.input_zoom is None

    unknown = drain(fine_tune("scratch-unet2d", image, labels, cfg, out=tmp_path / "u.safetensors"), show=False)
    info = load_model(unknown.checkpoint).info
    assert info.voxel_size is None and info.input_zoom[1] == pytest.approx(0.5, rel=0.05)
    scfg = SegmentConfig(inference=InferenceConfig(device="cpu", block=(3, 128, 128)))
    seg = drain(segment_job(unknown.checkpoint, image, scfg, out=tmp_path / "s.zarr"), show=False)
    grid = zarr.open_array(str(tmp_path / "s.zarr" / f"predictions{MODEL_GRID_SUFFIX}"), mode="r")
    assert grid.shape[1:] == (3, 64, 64)  # the model saw the image at half the pixels, as it trained
    pred = zarr.open_array(str(tmp_path / "s.zarr" / "predictions"), mode="r")
    assert pred.shape[1:] == image.shape and seg.labels.shape == image.shape
    assert pred.attrs["voxel_size_match"]["unit"] == "px" and not pred.attrs.get("voxel_size_known")


def test_scale_out_refuses_a_model_on_another_grid(tmp_path):
    from napari_emseg.blockwise.predict import predict_blockwise_job
    from napari_emseg.config import ConfigError
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    net = build_model(ModelConfig(arch="unet2d"), head_info("bcd", tile=(1, 64, 64)).replace(input_zoom=(1, 0.5, 0.5)))
    ckpt = save_checkpoint(tmp_path / "zoomed.safetensors", net)
    image = np.zeros((2, 64, 64), np.uint8)
    with pytest.raises(ConfigError, match="scale-out does not resample"):
        drain(predict_blockwise_job(None, ckpt, image, tmp_path / "p.zarr"), show=False)
    assert not (tmp_path / "p.zarr").exists()
    from napari_emseg.blockwise.predict import _refuse_another_grid

    _refuse_another_grid(load_model(ckpt), ckpt, None, VoxelMatchConfig(enabled=False))  # --no-voxel-match: allowed

"""Annotate here next: uncertainty where the model is unsure, suggestions spread and unpainted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_emseg.active import (
    UncertaintyConfig,
    suggest_job,
    suggest_slices,
    uncertainty_job,
)
from napari_emseg.config import ConfigError
from napari_emseg.data.normalize import NormConfig
from napari_emseg.inference import InferenceConfig
from napari_emseg.models.info import ModelInfo
from napari_emseg.progress import drain

FIXED = NormConfig(lo=0.0, hi=255.0)
SMALL = InferenceConfig(block=(4, 32, 32), device="cpu")


class Steep(nn.Module):
    """p = sigmoid(20 x) (input in [-1, 1]): sure on black and white, unsure on mid-grey. Flip-symmetric."""

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(task="mitochondria", target="bcd", channel_names=("foreground", "contour", "distance"),
                              spatial_dims=spatial_dims, input_multiple=(1, 8, 8), tile=(4, 32, 32), norm=FIXED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (20 * x).repeat_interleave(3, dim=1)


class Oriented(nn.Module):
    """p = sigmoid(10 (x(p) - x(p - 1 along x))): depends on orientation, so flips disagree on texture."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(target="boundaries", channel_names=("boundary",), input_multiple=(1, 8, 8),
                              tile=(4, 32, 32), norm=FIXED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(x)
        d[..., 1:] = x[..., 1:] - x[..., :-1]
        return 10 * d


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def checkerboard(shape=(12, 64, 64)) -> np.ndarray:
    z, y, x = np.indices(shape)
    return np.where((y // 8 + x // 8) % 2, 255, 0).astype(np.uint8)


def test_entropy_is_high_where_the_model_is_unsure_and_named_as_the_region():
    img = checkerboard()
    img[7, 16:48, 32:64] = 128  # the only place the model cannot decide
    cfg = UncertaintyConfig(measure="entropy", flips="none", cell=8, inference=SMALL)
    umap = drain(uncertainty_job(Steep(), img, cfg), show=False)
    assert umap.slice_scores.shape == (12,) and int(np.argmax(umap.slice_scores)) == 7
    assert umap.slice_scores[7] > 0.24 and np.delete(umap.slice_scores, 7).max() < 0.01  # a quarter unsure
    assert umap.coarse[7, 2:6, 4:8].min() > 0.99 and umap.coarse[7, :2].max() < 0.01
    best = suggest_slices(umap, painted=[2], n=3, region=(32, 32))[0]
    assert (best.index, best.axis, best.rank) == (7, 0, 1)
    assert best.box == ((7, 8), (16, 48), (32, 64)) and best.region_score > 0.99
    assert best.center == (7.0, 31.5, 47.5) and "z=7" in best.describe()


def test_flips_disagree_on_texture_and_streamed_reduction_is_exact():
    rng = np.random.default_rng(0)
    img = np.full((8, 64, 64), 128, np.uint8)
    img[5] = rng.integers(0, 256, (64, 64))  # texture only here
    full = np.zeros((1, 8, 64, 64), np.float16)
    cfg = UncertaintyConfig(measure="disagreement", cell=5, inference=SMALL)  # cells cut across blocks
    umap = drain(uncertainty_job(Oriented(), img, cfg, out=full), show=False)
    assert int(np.argmax(umap.slice_scores)) == 5 and umap.slice_scores[5] > 0.3
    assert np.delete(umap.slice_scores, 5).max() < 0.05  # flat: every flip predicts 0.5
    # the streamed per-slice means and cell means equal those of the full map
    f = full[0].astype(np.float64)
    np.testing.assert_allclose(umap.slice_scores, f.mean(axis=(1, 2)), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(umap.coarse[5, 2, 3], f[5, 10:15, 15:20].mean(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(umap.coarse[5, -1, -1], f[5, 60:, 60:].mean(), rtol=1e-3, atol=1e-4)
    # the entropy of the same flat prediction is maximal: the measures see different things
    ent = drain(uncertainty_job(Oriented(), img, cfg.replace(measure="entropy")), show=False)
    assert ent.slice_scores[0] > 0.99


def test_2d_model_scores_slices_along_another_axis():
    img = checkerboard((4, 32, 48))
    img[:, 8:24, 30] = 128
    cfg = UncertaintyConfig(measure="combined", axis=2, cell=4, inference=SMALL)
    umap = drain(uncertainty_job(Steep(spatial_dims=2), img, cfg), show=False)
    assert umap.slice_scores.shape == (48,) and int(np.argmax(umap.slice_scores)) == 30
    assert umap.cell == (4, 4, 1)
    with pytest.raises(ConfigError, match="needs test-time flips"):
        UncertaintyConfig(measure="disagreement", flips="none")


def test_suggestions_skip_painted_keep_the_gap_and_follow_the_score():
    scores = np.array([0.1, 0.2, 0.9, 0.95, 0.85, 0.3, 0.8, 0.1, 0.7, 0.75, 0.2, 0.6])
    found = suggest_slices(scores, painted=[3], n=3, min_gap=2)
    idx = [s.index for s in found]
    # 3 is painted; 2 and 4 are its neighbours (gap 2); 6 (0.8) then 9 (0.75); 8 is next to 9,
    # 11 (0.6) is the best of the rest
    assert idx == [6, 9, 11]
    assert [s.rank for s in found] == [1, 2, 3] and [s.score for s in found] == [0.8, 0.75, 0.6]
    # excluded slices are skipped without a gap around them
    assert [s.index for s in suggest_slices(scores, painted=[3], n=2, min_gap=2, exclude=[6])] == [9, 11]
    # too many asked for the gap: it shrinks, but painted and excluded slices stay out
    many = [s.index for s in suggest_slices(scores, painted=[3], n=10, min_gap=3, exclude=[0])]
    assert len(many) == 10 and 3 not in many and 0 not in many and len(set(many)) == 10
    # the default gap spreads suggestions over a long volume
    ramp = np.linspace(0, 1, 200)  # most uncertain at the end: a naive ranking takes 199, 198, ...
    spread = [s.index for s in suggest_slices(ramp, painted=[0], n=5)]
    assert spread[0] == 199 and min(np.diff(sorted(spread))) >= 200 // (2 * 6)


def test_suggest_job_reads_the_painted_axis_from_the_labels():
    img = checkerboard((12, 32, 32))
    img[9, 8:24, 8:24] = 128
    img[10, 8:24, 8:24] = 120
    labels = np.zeros(img.shape, np.uint32)
    labels[[1, 10]] = 1  # painted z-slices 1 and 10
    labels[[1, 10], :4, :4] = 0
    cfg = UncertaintyConfig(measure="entropy", flips="none", cell=8, inference=SMALL)
    found = drain(suggest_job(Steep(), img, labels, n=2, min_gap=1, config=cfg), show=False)
    assert found.painted == (1, 10) and found.uncertainty.axis == 0
    assert found.suggestions[0].index == 9  # 10 is as unsure but painted


@pytest.fixture
def cli_inputs(tmp_path, tiny_em):
    from napari_emseg.io import write_volume
    from napari_emseg.models import ModelConfig, build_model, save_checkpoint
    from napari_emseg.models.heads import head_info

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "bcd.safetensors", model)
    painted = np.zeros_like(tiny_em.mitochondria)
    painted[[3, 8]] = tiny_em.mitochondria[[3, 8]]
    write_volume(tmp_path / "in.zarr/raw", tiny_em.raw, voxel_size=tiny_em.voxel_size)
    write_volume(tmp_path / "in.zarr/painted", painted)
    return tmp_path, ckpt


def test_cli_suggest_and_finetune_suggest(cli_inputs, capsys):
    import json

    from napari_emseg.cli.main import main
    from napari_emseg.io import open_volume

    tmp, ckpt = cli_inputs
    rc = main(["-q", "suggest", "--image", f"{tmp}/in.zarr:raw", "--model", str(ckpt), "--labels",
               f"{tmp}/in.zarr:painted", "--n", "3", "--min-gap", "2", "--flips", "yx", "--device", "cpu",
               "--map", str(tmp / "unsure.zarr"), "--json", str(tmp / "next.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "next slices to paint along z" in out and "painted: 3, 8" in out
    rows = json.loads((tmp / "next.json").read_text())["suggestions"]
    idx = [r["index"] for r in rows]
    assert len(idx) == 3 and not {3, 8} & set(idx) and min(np.diff(sorted(idx))) >= 2
    assert f"1. z={idx[0]}" in out
    assert open_volume(f"{tmp}/unsure.zarr", channel=0).data.shape == (12, 96, 96)
    rc = main(["-q", "finetune", "--image", f"{tmp}/in.zarr:raw", "--labels", f"{tmp}/in.zarr:painted",
               "--task", "mitochondria", "--encoder", str(ckpt), "--out", str(tmp / "ft.safetensors"),
               "--steps", "2", "--patch", "4,32,32", "--suggest", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "ft.safetensors" in out and "2. z=" in out and "3. z=" not in out


def test_diverse_suggestions_skip_slices_like_the_painted_ones():
    from napari_emseg.active import UncertaintyMap, suggest_diverse

    # slices 0-5 look alike (feature a), 6-9 another way (b); 4 and 5 are the most uncertain
    feats = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 4)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.5, 0.6, 0.55, 0.2])
    umap = UncertaintyMap(0, (10, 16, 16), (1, 8, 8), np.ones((10, 2, 2), np.float32), scores, "entropy")
    assert [s.index for s in suggest_slices(umap, painted=[0], n=2, min_gap=1)] == [4, 5]  # both like slice 0
    found = suggest_diverse(umap, feats, painted=[0], n=2)
    assert [s.index for s in found] == [7, 4]  # the most uncertain unlike 0, then (nothing else new) the top
    assert [s.index for s in suggest_diverse(umap, feats, painted=[0], n=1, exclude=[7])] == [8]
    # an outlier (9) is farthest from the painted slice but typical of nothing: represent weighs it down
    feats = np.array([[1.0, 0, 0]] * 5 + [[0.7, 0.7, 0]] * 4 + [[0, 0, 1.0]])
    flat = UncertaintyMap(0, (10, 16, 16), (1, 8, 8), np.ones((10, 2, 2), np.float32), np.full(10, 0.5), "entropy")
    assert suggest_diverse(flat, feats, painted=[0], n=1, represent=0)[0].index == 9
    assert suggest_diverse(flat, feats, painted=[0], n=1)[0].index == 5


def test_slice_features_tell_textures_apart_and_suggest_job_takes_the_method(tiny_em):
    from napari_emseg.active import slice_features
    from napari_emseg.models import ModelConfig, build_model
    from napari_emseg.models.heads import head_info

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    img = checkerboard((12, 64, 64))
    img[6:] = np.random.default_rng(0).integers(0, 255, img[6:].shape)  # noise in the second half
    f = slice_features(model, img, device="cpu")
    assert f.shape[0] == 12 and f.ndim == 2
    same = np.linalg.norm(f[1] - f[2]) + np.linalg.norm(f[8] - f[9])
    assert np.linalg.norm(f[1] - f[9]) > same
    labels = np.zeros(img.shape, np.uint32)
    labels[2] = 1
    labels[2, :4, :4] = 0
    cfg = UncertaintyConfig(measure="entropy", flips="none", cell=8, inference=SMALL)
    found = drain(suggest_job(model, img, labels, n=2, config=cfg, method="diverse"), show=False)
    assert len(found.suggestions) == 2 and 2 not in [s.index for s in found.suggestions]


def test_cli_suggest_diverse(cli_inputs, capsys):
    from napari_emseg.cli.main import main

    tmp, ckpt = cli_inputs
    rc = main(["-q", "suggest", "--image", f"{tmp}/in.zarr:raw", "--model", str(ckpt), "--labels",
               f"{tmp}/in.zarr:painted", "--n", "2", "--flips", "none", "--measure", "entropy", "--device", "cpu",
               "--method", "diverse"])
    out = capsys.readouterr().out
    assert rc == 0 and "1. z=" in out and "2. z=" in out and "3. z=" not in out

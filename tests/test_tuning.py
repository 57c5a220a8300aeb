"""Post-processing tuned on painted slices: beats the defaults where they fail, scores honestly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.config import ConfigError
from napari_emseg.data.synthetic import make_synthetic_em
from napari_emseg.evaluation import adapted_rand, average_precision
from napari_emseg.finetune.annotations import Annotations
from napari_emseg.finetune.targets import affinity_targets, bcd_targets
from napari_emseg.postprocess import MitoConfig, NeuronConfig, extract_instances
from napari_emseg.tuning import painted_reference, parse_grid, slice_score, tune_postprocess

PAINTED = (2, 7)


def whole(labels: np.ndarray) -> Annotations:
    """Every voxel annotated (targets of the full volume, not cropped)."""
    return Annotations(labels.astype(np.int64), np.ones(labels.shape, bool),
                       tuple(slice(0, s) for s in labels.shape), 0, tuple(range(labels.shape[0])), "dense", 1)


@pytest.fixture(scope="module")
def em():
    return make_synthetic_em(shape=(10, 128, 128), seed=3)


def paint(gt: np.ndarray, slices=PAINTED) -> np.ndarray:
    out = np.zeros_like(gt)
    out[list(slices)] = gt[list(slices)]
    return out


def squashed(target: np.ndarray, lo: float, span: float, seed: int = 0) -> np.ndarray:
    """An under-confident model's maps: the true ones squeezed into [lo, lo + span], plus noise.

    The defaults (boundary threshold 0.5, waterz threshold 0.5; seeds at foreground 0.9) assume
    confident maps, so they fail here: the case tuning is for."""
    rng = np.random.default_rng(seed)
    return np.clip(lo + span * target + rng.normal(0, 0.03, target.shape), 0, 1).astype(np.float32)


def held_out(n: int) -> list[int]:
    return [i for i in range(n) if i not in PAINTED]


def test_neuron_thresholds_tuned_on_painted_slices_beat_defaults_elsewhere(em):
    gt = em.neurons.astype(np.int64)
    pred = squashed(affinity_targets(whole(gt)).target, 0.1, 0.3)
    res = tune_postprocess(pred, "affinities", paint(gt))
    assert res.metric == "arand" and res.slices == PAINTED and res.axis == 0
    assert res.changes()  # the defaults are not the best here
    # the reported score is the ARAND of the real pipeline's output, slice by slice
    tuned = extract_instances(pred, "affinities", res.config)
    independent = np.mean([adapted_rand(tuned[z], gt[z]).error for z in PAINTED])
    assert res.score == pytest.approx(independent, abs=1e-9)
    default = extract_instances(pred, "affinities", NeuronConfig())
    assert res.base_score == pytest.approx(np.mean([adapted_rand(default[z], gt[z]).error for z in PAINTED]))
    # and it generalises: better on the slices nobody painted
    others = held_out(gt.shape[0])
    err_tuned = np.mean([adapted_rand(tuned[z], gt[z]).error for z in others])
    err_default = np.mean([adapted_rand(default[z], gt[z]).error for z in others])
    assert err_tuned < 0.1 < 0.3 < err_default
    # every setting tried is in the table, the best among them
    assert len(res.table) == 3 * 3 * 19 * 3
    assert min(r["score"] for r in res.table) == pytest.approx(res.score)


def test_mitochondria_thresholds_tuned_for_a_weak_foreground(em):
    gt = em.mitochondria.astype(np.int64)
    pred = squashed(bcd_targets(whole(gt)).target, 0.15, 0.5)
    painted = paint(gt) > 0  # painted as one value: objects are split per slice
    res = tune_postprocess(pred, "bcd", painted.astype(np.uint8))
    assert res.metric == "ap" and res.base_score == 0.0 and res.score > 0.9
    # the foreground (max 0.65) never passes the default threshold: the tuned one is below it
    assert res.config.foreground_threshold < min(MitoConfig().foreground_threshold, 0.65)
    tuned = extract_instances(pred, "bcd", res.config)
    ref = np.stack([gt[z] for z in PAINTED])
    independent = average_precision(_unique_per_slice(tuned[list(PAINTED)]), _unique_per_slice(ref)).mean_ap
    assert res.score == pytest.approx(independent, abs=1e-9)
    others = held_out(gt.shape[0])
    default = extract_instances(pred, "bcd", MitoConfig())
    ref_others = np.stack([gt[z] for z in others])
    assert slice_score(tuned, ref_others, others, metric="ap") > 0.8
    assert slice_score(default, ref_others, others, metric="ap") == 0.0


def _unique_per_slice(stack: np.ndarray) -> np.ndarray:
    out = stack.astype(np.int64).copy()
    for i in range(len(out)):
        out[i][out[i] > 0] += (i + 1) * 10_000
    return out


def test_boundary_maps_custom_grid_and_errors(em):
    gt = em.neurons.astype(np.int64)[:4]
    bnd = (affinity_targets(whole(gt)).target[1:].min(0) < 0.5).astype(np.float32)  # in-plane boundaries
    grid = parse_grid(["threshold=0.1,0.3", "min_size=0"])
    res = tune_postprocess(bnd[None], "boundaries", paint(gt, (1,)), grid=grid, metric="voi")
    # base values (threshold 0.5, min_size 100) are always tried too
    assert {r["threshold"] for r in res.table} == {0.1, 0.3, 0.5} and {r["min_size"] for r in res.table} == {0, 100}
    assert res.metric == "voi" and res.lower_is_better and "voi" in res.describe()
    with pytest.raises(ConfigError, match="no such field"):
        tune_postprocess(bnd[None], "boundaries", paint(gt, (1,)), grid={"thresold": [0.1]})
    with pytest.raises(ConfigError, match="semantic"):
        tune_postprocess(bnd[None], "semantic", paint(gt, (1,)))
    with pytest.raises(ConfigError, match="FIELD=V1"):
        parse_grid(["threshold"])


def test_painted_reference_reads_scribbles_and_other_axes():
    lab = np.zeros((4, 6, 8), np.int64)
    lab[:, :, 5] = 3
    lab[:, 0, 5] = 4
    axis, slices, ref = painted_reference(lab, lab.shape, "neurons")
    assert axis == 2 and slices == (5,) and ref.shape == (1, 4, 6)
    scrib = np.zeros((4, 6, 8), np.int64)
    scrib[1, 1:3, 1:3] = 1  # background scribble
    scrib[3, 4, 4:6] = 2
    axis, slices, ref = painted_reference(scrib, scrib.shape, "neurons", mode="scribbles")
    assert axis == 0 and slices == (1, 3) and set(np.unique(ref)) == {0, 2}


def test_cli_segment_tune_prints_and_uses_the_chosen_values(tmp_path, tiny_em, capsys):
    import torch
    import zarr

    from napari_emseg.cli.main import main
    from napari_emseg.io import write_volume
    from napari_emseg.models import ModelConfig, build_model, save_checkpoint
    from napari_emseg.models.heads import head_info

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "bcd.safetensors", model)
    write_volume(tmp_path / "in.zarr/raw", tiny_em.raw, voxel_size=tiny_em.voxel_size)
    write_volume(tmp_path / "in.zarr/painted", paint(tiny_em.mitochondria, (3, 8)))
    rc = main(["-q", "segment", "--image", f"{tmp_path}/in.zarr:raw", "--model", str(ckpt), "--out",
               str(tmp_path / "o.zarr"), "--device", "cpu", "--tune", f"{tmp_path}/in.zarr:painted",
               "--tune-metric", "iou", "--tune-grid", "foreground_threshold=0.1,0.3,0.5", "--tune-grid",
               "seed_foreground=0.2,0.5", "--post", "min_size=0"])
    out = capsys.readouterr().out
    assert rc == 0 and "tuned on 2 painted slice(s) along z (3, 8)" in out and "chose" in out
    labels = zarr.open_array(str(tmp_path / "o.zarr" / "labels"), mode="r")
    tuning, post = labels.attrs["tuning"], labels.attrs["postprocess"]
    assert tuning["metric"] == "iou" and tuning["slices"] == [3, 8] and f"iou {tuning['score']:.4f}" in out
    assert tuning["score"] >= tuning["default_score"]
    # the labels were made with the chosen values, which came from the grid (plus the base's)
    assert post["foreground_threshold"] in (0.1, 0.3, 0.5, 0.85) and post["seed_foreground"] in (0.2, 0.5, 0.9)
    chosen = MitoConfig.from_dict(post)
    pred = zarr.open_array(str(tmp_path / "o.zarr" / "predictions"), mode="r")
    again = extract_instances(pred, "bcd", chosen)
    assert (again > 0).sum() == (labels[...] > 0).sum()

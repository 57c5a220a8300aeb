"""Annotate here next, by region: uncertain windows across slices, not overlapping, spread; and a
painted region trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.active import UncertaintyConfig, UncertaintyMap, suggest_job, uncertainty_job
from napari_emseg.active_regions import (
    painted_cells,
    random_regions,
    region_boxes_mask,
    suggest_regions,
)
from napari_emseg.progress import drain

from .test_active import SMALL, Steep, checkerboard, cli_inputs  # noqa: F401 (a fixture)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def flat_map(coarse: np.ndarray, cell=(1, 8, 8)) -> UncertaintyMap:
    shape = tuple(n * c for n, c in zip(coarse.shape, cell))
    return UncertaintyMap(0, shape, cell, coarse.astype(np.float32), coarse.mean(axis=(1, 2)), "entropy")


def test_regions_follow_the_uncertainty_do_not_overlap_and_spread():
    coarse = np.full((6, 8, 8), 0.1)
    coarse[2, 0:2, 0:2] = 0.9  # the most uncertain window
    coarse[2, 4:6, 4:6] = 0.8  # second best, in the same slice
    coarse[4, 2:4, 6:8] = 0.7  # third, elsewhere
    umap = flat_map(coarse)
    found = suggest_regions(umap, n=3, size=(16, 16))
    assert [f.index for f in found] == [2, 4, 2]  # the second window of slice 2 counts half (0.4 < 0.7)
    assert found[0].box == ((2, 3), (0, 16), (0, 16)) and found[0].region_score == pytest.approx(0.9)
    assert found[1].box == ((4, 5), (16, 32), (48, 64))
    assert found[2].box == ((2, 3), (32, 48), (32, 48))
    boxes = [f.box for f in found]
    masks = region_boxes_mask(umap.shape, boxes)
    assert masks.sum() == 3 * 16 * 16  # no overlap
    # decay=1: uncertainty alone; painted slices and painted cells are never suggested
    assert [f.index for f in suggest_regions(umap, n=2, size=(16, 16), decay=1.0)] == [2, 2]
    assert suggest_regions(umap, n=1, size=(16, 16), painted=[2])[0].index == 4
    done = painted_cells(umap, region_boxes_mask(umap.shape, [((2, 3), (0, 8), (0, 8))]))
    assert done.sum() == 1 and done[2, 0, 0]
    first = suggest_regions(umap, n=1, size=(16, 16), painted_mask=done, decay=1.0)[0]
    assert first.box == ((2, 3), (32, 48), (32, 48))  # the best window overlaps a painted cell
    # windows never overlap even when all asked for do not fit: as many as fit
    assert len(suggest_regions(flat_map(np.ones((1, 4, 4))), n=10, size=(16, 16))) == 4


def test_random_regions_are_where_asked_and_do_not_overlap():
    rng = np.random.default_rng(0)
    painted = [((1, 2), (0, 32), (0, 32))]
    boxes = random_regions((4, 64, 64), 6, (16, 16), rng=rng, candidates=[1, 3], painted_boxes=painted)
    assert len(boxes) == 6 and {b[0][0] for b in boxes} <= {1, 3}
    mask = region_boxes_mask((4, 64, 64), boxes + painted)
    assert mask.sum() == 6 * 256 + 32 * 32


def test_suggest_job_regions_skip_what_is_scribbled():
    img = checkerboard((12, 64, 64))
    img[7, 0:16, 0:16] = 128  # two unsure patches in slice 7
    img[7, 32:48, 32:48] = 128
    img[3, 16:32, 16:32] = 128  # and one in slice 3
    labels = np.zeros(img.shape, np.uint32)
    labels[7, 0:16, 0:16] = 1  # the first patch is painted already (scribbles: background label)
    labels[7, 2:4, 2:4] = 2
    cfg = UncertaintyConfig(measure="entropy", flips="none", cell=8, inference=SMALL)
    found = drain(suggest_job(Steep(), img, labels, n=2, region=(16, 16), config=cfg, method="regions",
                              mode="scribbles"), show=False).suggestions
    # as unsure as each other: slice 7 holds painted voxels already, so slice 3 comes first
    assert [f.box for f in found] == [((3, 4), (16, 32), (16, 32)), ((7, 8), (32, 48), (32, 48))]
    assert all(f.region_score > 0.99 for f in found)


def test_painting_a_suggested_region_trains_mitochondria(tiny_em):
    from napari_emseg.finetune.job import FineTuneConfig, fine_tune
    from napari_emseg.models import ModelConfig, build_model
    from napari_emseg.models.heads import head_info

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(1, 32, 32)))
    cfg = UncertaintyConfig(measure="entropy", flips="none", cell=8, inference=SMALL)
    umap = drain(uncertainty_job(model, tiny_em.raw, cfg), show=False)
    gt = tiny_em.mitochondria
    # a window with objects in it, as the user would paint it: background label 1, objects 2, 3, ...
    found = [f for f in suggest_regions(umap, n=20, size=(48, 48)) if gt[f.box[0][0]][
        tuple(slice(*b) for b in f.box[1:])].any()][0]
    labels = np.zeros(gt.shape, np.int32)
    z, (y0, y1), (x0, x1) = found.index, *found.box[1:]
    labels[z, y0:y1, x0:x1] = gt[z, y0:y1, x0:x1] + 1
    before = [p.detach().clone() for p in model.parameters()]
    cfg = FineTuneConfig(task="mitochondria", mode="scribbles", steps=3, patch=(1, 32, 32), batch_size=2,
                         holdout=False, device="cpu", validate_every=10**9, calibrate=False)
    res = drain(fine_tune(model, tiny_em.raw, labels, cfg), show=False)
    assert res.steps == 3 and np.isfinite(res.metrics.get("loss", 0.0))
    assert any(not torch.equal(a, b) for a, b in zip(before, res.model.parameters()))


def test_cli_suggest_regions(cli_inputs, capsys):  # noqa: F811 (the imported fixture)
    import json

    from napari_emseg.cli.main import main

    tmp, ckpt = cli_inputs
    rc = main(["-q", "suggest", "--image", f"{tmp}/in.zarr:raw", "--model", str(ckpt), "--labels",
               f"{tmp}/in.zarr:painted", "--regions", "3", "--region", "32,32", "--flips", "none",
               "--measure", "entropy", "--device", "cpu", "--json", str(tmp / "next.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "next regions to paint along z" in out and "3. z=" in out and "4. z=" not in out
    rows = json.loads((tmp / "next.json").read_text())["suggestions"]
    assert len(rows) == 3 and not {3, 8} & {r["index"] for r in rows}  # painted slices 3 and 8
    boxes = [tuple(map(tuple, r["box"])) for r in rows]
    assert all(y1 - y0 == 32 and x1 - x0 == 32 for _, (y0, y1), (x0, x1) in boxes)
    assert region_boxes_mask((12, 96, 96), boxes).sum() == 3 * 32 * 32  # no overlap

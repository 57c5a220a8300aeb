"""Proofreading core: merge, split along the maps, delete, fill holes, exact undo, replay, rerun."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_emseg.morphometrics import MeasureConfig, measure, remeasure_job
from napari_emseg.progress import drain
from napari_emseg.proofread import (
    FORMAT,
    Proofreader,
    ProofreadError,
    bundle_section,
    object_boxes,
    replay,
)

BCD = ("foreground", "contour", "distance")


def scene() -> np.ndarray:
    """Three objects: a bar (1) to split, two blocks (2, 3) to merge, and a hollow box (4)."""
    lab = np.zeros((6, 30, 40), np.uint32)
    lab[1:5, 2:8, 0:24] = 1
    lab[1:5, 12:18, 2:8] = 2
    lab[1:5, 12:18, 10:16] = 3
    lab[0:6, 20:28, 28:38] = 4
    lab[2:4, 23:25, 31:35] = 0  # a cavity enclosed in 3D
    return lab


def contour_map(shape: tuple[int, ...], ridge_x: int) -> np.ndarray:
    maps = np.zeros((3, *shape), np.float32)
    maps[0] = 1.0
    maps[1, ..., ridge_x] = 0.9  # the boundary the network saw between two touching objects
    return maps


def test_merge_makes_one_id_and_undo_restores_exactly():
    lab = scene()
    orig = lab.copy()
    ed = Proofreader(lab)
    edit = ed.merge([2, 3])
    assert set(np.unique(lab)) == {0, 1, 2, 4}
    assert (lab[orig == 3] == 2).all() and (lab[orig != 3] == orig[orig != 3]).all()
    assert edit.record == {"op": "merge", "ids": [2, 3]} and ed.log == [edit.record]
    ed.undo()
    np.testing.assert_array_equal(lab, orig)
    assert ed.log == [] and ed.undo() is None
    with pytest.raises(ProofreadError, match="2 object"):
        ed.merge([2])
    with pytest.raises(ProofreadError, match="background"):
        ed.merge(points=[[2, 14, 4], [0, 0, 0]])


def test_split_by_seeds_follows_the_maps_boundary():
    lab = scene()
    orig = lab.copy()
    ed = Proofreader(lab, contour_map(lab.shape, ridge_x=15), "bcd", BCD)
    edit = ed.split([[2, 4, 3], [2, 4, 21]])
    new = edit.record["new_ids"]
    assert new == [5] and edit.record["elevation"] == "contour" and edit.record["id"] == 1
    bar = orig == 1
    assert set(np.unique(lab[bar])) == {1, 5}
    assert (lab[1:5, 2:8, :15] == 1).all() and (lab[1:5, 2:8, 16:24] == 5).all()  # cut at the ridge (x=15)
    assert (lab[~bar] == orig[~bar]).all()
    # without maps the cut falls where the shape is narrowest/middle, not at the ridge
    plain = orig.copy()
    Proofreader(plain).split([[2, 4, 3], [2, 4, 21]])
    assert (plain[1:5, 2:8, 13] == 5).any() or (plain[1:5, 2:8, 16] == 1).any()
    with pytest.raises(ProofreadError, match="one object"):
        ed.split([[2, 4, 3], [2, 14, 4]])
    with pytest.raises(ProofreadError, match="two or more"):
        ed.split([[2, 4, 3], [2, 4, 3]])


def test_split_on_affinities_and_uint8_maps_and_three_seeds():
    lab = scene()
    aff = np.ones((3, *lab.shape), np.float32)
    aff[:, ..., 9] = 0.0  # low affinity = boundary at x=9
    ed = Proofreader(lab, (aff * 255).astype(np.uint8), "affinities", ("z", "y", "x"))
    ed.split([[2, 4, 2], [2, 4, 20]])
    assert (lab[1:5, 2:8, :9] == 1).all() and (lab[1:5, 2:8, 10:24] == 5).all()
    ed.undo()
    edit = ed.split([[2, 4, 2], [2, 4, 12], [2, 4, 22]])
    assert edit.record["new_ids"] == [5, 6] and set(np.unique(lab[scene() == 1])) == {1, 5, 6}


def test_delete_zeroes_and_fill_holes_fills_enclosed_background_only():
    lab = scene()
    orig = lab.copy()
    ed = Proofreader(lab)
    ed.delete([3])
    assert not (lab == 3).any() and (lab[orig == 3] == 0).all()
    ed.fill_holes([4])
    assert (lab[2:4, 23:25, 31:35] == 4).all()
    assert (lab[orig == 0][:100] == 0).all() and int((lab == 4).sum()) == int((orig == 4).sum()) + 2 * 2 * 4
    # a tube open at both ends has no 3D hole, but every slice has one
    tube = np.zeros((5, 12, 12), np.uint16)
    tube[:, 2:10, 2:10] = 7
    tube[:, 4:8, 4:8] = 0
    tube[2, 5, 5] = 8  # another object inside stays
    Proofreader(tube).fill_holes([7])
    assert (tube[:, 5, 6] == 0).all()
    Proofreader(tube).fill_holes(points=[[0, 2, 2]], per_slice=True)
    assert (tube[:, 4:8, 4:8] != 0).all() and tube[2, 5, 5] == 8


def test_undo_of_a_sequence_restores_exactly_and_replay_reproduces_the_edits():
    lab = scene()
    orig = lab.copy()
    maps = contour_map(lab.shape, ridge_x=15)
    ed = Proofreader(lab, maps, "bcd", BCD)
    ed.merge(points=[[2, 14, 4], [2, 14, 12]])
    ed.split([[2, 4, 3], [2, 4, 21]])
    ed.fill_holes(points=[[0, 20, 28]])
    ed.delete(points=[[2, 4, 20]])
    ed.split([[2, 4, 3], [2, 4, 10]])
    edited = lab.copy()
    section = bundle_section(ed.log)
    assert section["format"] == FORMAT and len(section["edits"]) == 5
    np.testing.assert_array_equal(replay(orig.copy(), section["edits"], maps, "bcd", BCD), edited)
    # on a segmentation with other ids (a fresh run may number objects differently) the edits
    # given by points still hit the same objects
    perm = np.array([0, 9, 4, 3, 2], np.uint32)[orig]
    again = replay(perm, section["edits"][:4], maps, "bcd", BCD)
    ref = replay(orig.copy(), section["edits"][:4], maps, "bcd", BCD)
    assert len(np.unique(again)) == len(np.unique(ref))
    np.testing.assert_array_equal(again == 0, ref == 0)
    for _ in range(5):
        ed.undo()
    np.testing.assert_array_equal(lab, orig)
    assert ed.log == []


class Recording:
    """A zarr array that records which boxes were read and written."""

    def __init__(self, arr):
        self.arr, self.writes = arr, []
        self.shape, self.dtype, self.chunks = arr.shape, arr.dtype, arr.chunks

    def __getitem__(self, key):
        return self.arr[key]

    def __setitem__(self, key, value):
        self.writes.append(key)
        self.arr[key] = value


def test_large_labels_are_edited_only_inside_the_objects_boxes(tmp_path):
    lab = np.zeros((20, 200, 200), np.uint32)
    lab[2:6, 10:20, 10:20] = 1
    lab[2:6, 10:20, 22:30] = 2
    lab[12:18, 150:190, 150:190] = 3
    z = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=lab.shape, chunks=(8, 64, 64), dtype="uint32")
    z[:] = lab
    rec = Recording(z)
    ed = Proofreader(rec)
    assert object_boxes(rec, [1, 3]) == {1: (slice(2, 6), slice(10, 20), slice(10, 20)),
                                         3: (slice(12, 18), slice(150, 190), slice(150, 190))}
    ed.merge([1, 2])
    ed.delete([3])
    ed.undo()
    assert rec.writes == [(slice(2, 6), slice(10, 20), slice(22, 30))] + [(slice(12, 18), slice(150, 190),
                                                                           slice(150, 190))] * 2
    out = z[:]
    assert (out[lab == 2] == 1).all() and (out[lab == 3] == 3).all()


def test_remeasure_equals_a_full_measure_after_edits():
    lab = scene()
    vs = (30.0, 8.0, 8.0)
    cfg = MeasureConfig(skeleton=False)
    table = measure(lab, vs, config=cfg)
    ed = Proofreader(lab, contour_map(lab.shape, ridge_x=15), "bcd", BCD)
    changed = set(ed.merge([2, 3]).changed) | set(ed.split([[2, 4, 3], [2, 4, 21]]).changed)
    new = drain(remeasure_job(table, lab, sorted(changed), vs, config=cfg), show=False)
    full = measure(lab, vs, config=cfg)
    assert list(new["label"]) == [1, 2, 4, 5]
    for col in full:
        np.testing.assert_allclose(new[col], full[col], err_msg=col)


def test_rerun_replays_the_edits_recorded_in_the_provenance_bundle(tmp_path):
    """As the Segment widget: segment a layer in memory, proofread, export; rerun makes the same labels."""
    import torch

    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.inference import InferenceConfig
    from napari_emseg.io import open_volume, write_volume
    from napari_emseg.models import ModelConfig, build_model, save_checkpoint
    from napari_emseg.models.heads import head_info
    from napari_emseg.postprocess.mitochondria import MitoConfig
    from napari_emseg.provenance import read_bundle
    from napari_emseg.rerun import rerun_job
    from napari_emseg.workflows import SegmentConfig, export_labels, segment_job

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    ckpt = save_checkpoint(tmp_path / "mito.safetensors", net, card={"method": "test", "data": "synthetic"})
    em = make_synthetic_em((12, 64, 64), seed=7)
    write_volume(tmp_path / "raw.zarr", em.raw, voxel_size=em.voxel_size, chunks=(6, 32, 32))
    post = MitoConfig(seed_foreground=0.55, seed_contour=0.6, seed_distance=0.0, foreground_threshold=0.5,
                      min_seed_size=2, min_size=0)
    cfg = SegmentConfig(inference=InferenceConfig(device="cpu"), mitochondria=post)
    seg = drain(segment_job(ckpt, em.raw, cfg, voxel_size=em.voxel_size, provenance=True, calibrated=False,
                            attrs={"source": {"image": str(tmp_path / "raw.zarr")}}), show=False)
    labels = np.array(seg.labels)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    assert np.count_nonzero(sizes) >= 4
    big, second, third = (int(i) for i in np.argsort(sizes)[::-1][:3])
    ed = Proofreader(labels, seg.predictions, seg.target, seg.channel_names)
    where = np.argwhere(labels == big)
    ed.split([where[0], where[-1]])
    ed.merge(points=[np.argwhere(labels == second)[0], np.argwhere(labels == third)[0]])
    ed.delete(points=[np.argwhere(labels == int(np.argsort(sizes)[::-1][3]))[0]])
    assert not np.array_equal(labels, seg.labels)
    seg.provenance["proofreading"] = bundle_section(ed.log)  # what the widget's panel records
    exported = export_labels(tmp_path / "edited.zarr", labels, em.voxel_size, seg, post, {"layer": "t"})
    assert read_bundle(exported)["proofreading"]["edits"] == ed.log

    res = drain(rerun_job(exported, tmp_path / "again.zarr", device="cpu"), show=False)
    assert res.input_identical and res.model_identical and res.labels_identical is True
    np.testing.assert_array_equal(open_volume(tmp_path / "again.zarr" / "labels").data.compute(), labels)
    again = read_bundle(tmp_path / "again.zarr")
    assert again["proofreading"]["edits"] == ed.log
    assert again["results"]["labels_checksum"]["digest"] == read_bundle(exported)["results"]["labels_checksum"]["digest"]

"""Neurons from affinities: fragments, waterz agglomeration, instant re-runs, silence, memory guard."""

from __future__ import annotations

import numpy as np
import pytest
import waterz

from napari_emseg.config import ConfigError
from napari_emseg.evaluation import neuron_metrics
from napari_emseg.postprocess import (
    MERGE_FUNCTIONS,
    NeuronConfig,
    build_agglomeration,
    extract_instances,
    extract_instances_job,
    waterz_agglomerate,
)
from napari_emseg.postprocess.affinities import zero_at_boundaries
from napari_emseg.postprocess.fragments import FragmentConfig, fragments_job
from napari_emseg.postprocess.maps import MapError
from napari_emseg.progress import Progress, drain

from .conftest import gt_affinities


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are the same segmentation up to renaming."""
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    pairs = np.unique(a * (int(b.max()) + 1) + b)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_gt_affinities_recover_the_synthetic_neurons(sample, mode):
    affs = gt_affinities(sample.neurons, noise=0.1, seed=1)
    cfg = NeuronConfig(fragments=FragmentConfig(mode=mode))
    labels = extract_instances(affs, "affinities", cfg, voxel_size=sample.voxel_size)
    assert labels.dtype == np.uint32 and labels.shape == sample.neurons.shape
    assert set(np.unique(labels)) == set(range(1, int(labels.max()) + 1))  # dense, consecutive
    scores = neuron_metrics(labels, sample.neurons)
    assert scores["arand"] < 0.05, scores
    assert scores["voi_split"] + scores["voi_merge"] < 0.5, scores


def test_fragments_over_segment_and_agglomeration_joins_them(sample):
    affs = gt_affinities(sample.neurons, noise=0.1)
    frags = drain(fragments_job(affs, FragmentConfig()), show=False)
    # 2D fragments: one or more per neuron section, none crossing a section
    assert frags.count > len(np.unique(sample.neurons))
    for z in range(1, affs.shape[1]):
        shared = np.intersect1d(np.unique(frags.labels[z]), np.unique(frags.labels[z - 1]))
        assert shared.size == 0
    assert frags.boundary.any() and not (frags.labels == 0).any()
    # boundary voxels lie where the ground truth changes (one voxel on each side of a cut)
    n = sample.neurons
    cut = np.zeros_like(frags.boundary)
    for diff, hi, lo in ((n[:, 1:] != n[:, :-1], np.s_[:, 1:], np.s_[:, :-1]),
                         (n[:, :, 1:] != n[:, :, :-1], np.s_[:, :, 1:], np.s_[:, :, :-1])):
        cut[hi] |= diff
        cut[lo] |= diff
    assert (frags.boundary & cut).sum() > 0.8 * frags.boundary.sum()
    agg = build_agglomeration(affs, NeuronConfig())
    assert agg.n_segments(0.0) == frags.count
    assert agg.n_segments(0.5) < frags.count / 5


def test_higher_threshold_gives_fewer_segments_for_every_merge_function(sample):
    affs = gt_affinities(sample.neurons, noise=0.35, seed=2)
    thresholds = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    for merge in ("mean", "median", "quantile_25", "quantile_75"):
        agg = build_agglomeration(affs, NeuronConfig(merge_function=merge))
        counts = [agg.n_segments(t) for t in thresholds]
        assert counts == sorted(counts, reverse=True), (merge, counts)
        assert counts[0] > counts[-1], (merge, counts)


def test_threshold_reruns_reproduce_waterz_exactly(sample):
    """The merge-history replay equals a fresh waterz run at each threshold (also unseen ones)."""
    affs = gt_affinities(sample.neurons, noise=0.35, seed=4)
    for merge in ("mean", "quantile_50"):
        agg = build_agglomeration(affs, NeuronConfig(merge_function=merge))
        frags = drain(fragments_job(affs, FragmentConfig()), show=False)
        cut = zero_at_boundaries(affs.copy(), frags.boundary)
        thresholds = [0.05, 0.15, 0.33, 0.6, 0.85]
        direct = {t: seg for t, seg, _, _ in waterz_agglomerate(cut, frags.labels, thresholds, merge)}
        assert len({len(np.unique(seg)) for seg in direct.values()}) > 2  # the thresholds matter here
        for t in thresholds:
            replay = agg.lookup(t)[frags.labels]
            assert _same_partition(replay, direct[t]), (merge, t)


def test_one_pass_many_thresholds(sample):
    affs = gt_affinities(sample.neurons, noise=0.2)
    agg = build_agglomeration(affs, NeuronConfig())
    results = dict(agg.segmentations([0.6, 0.1, 0.3]))
    assert list(results) == [0.6, 0.1, 0.3]
    n = {t: int(seg.max()) for t, seg in results.items()}
    assert n[0.1] >= n[0.3] >= n[0.6]
    assert np.array_equal(results[0.3], agg.segmentation(0.3))


def test_min_size_merges_small_segments_into_neighbours(sample):
    affs = gt_affinities(sample.neurons, noise=0.1)
    agg = build_agglomeration(affs, NeuronConfig())
    raw = agg.segmentation(0.3, min_size=0)
    cleaned = agg.segmentation(0.3, min_size=500)
    dropped = agg.segmentation(0.3, min_size=500, small="drop")
    sizes = np.bincount(cleaned.ravel())[1:]
    assert sizes.min() >= 500 and cleaned.max() < raw.max()
    assert (cleaned > 0).all()  # merged: every voxel keeps a label
    assert (dropped == 0).any() and np.bincount(dropped.ravel())[1:].min() >= 500


def test_waterz_prints_nothing_to_stdout(sample, capfd):
    affs = gt_affinities(sample.neurons[:4, :64, :64], noise=0.1)
    # waterz itself does print (the check below could fail) ...
    capfd.readouterr()
    frags = np.arange(1, affs[0].size + 1, dtype=np.uint64).reshape(affs.shape[1:])
    for _ in waterz.agglomerate(affs, [0.5], fragments=frags):
        pass
    assert "merging until" in capfd.readouterr().out
    # ... but none of it reaches stdout through napari-emseg
    labels = extract_instances(affs, "affinities")
    for _ in waterz_agglomerate(affs, frags, [0.2, 0.4]):
        pass
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""
    assert labels.max() > 1


def test_uint8_zarr_map_gives_the_same_labels_as_float(sample, tmp_path):
    import zarr

    affs = gt_affinities(sample.neurons[:8], noise=0.1)
    as_u8 = np.round(affs * 255).astype(np.uint8)
    store = zarr.create_array(store=str(tmp_path / "affs.zarr"), shape=as_u8.shape, chunks=(1, 4, 64, 64),
                              dtype="uint8", zarr_format=2)
    store[...] = as_u8
    store.attrs["scale"] = 255
    from_zarr = extract_instances(zarr.open_array(str(tmp_path / "affs.zarr")), "affinities")
    from_float = extract_instances(as_u8.astype(np.float32) / 255, "affinities")
    assert np.array_equal(from_zarr, from_float)


def test_generator_variant_reports_progress(sample):
    affs = gt_affinities(sample.neurons[:6], noise=0.1)
    events = []
    labels = drain(extract_instances_job(affs, "affinities"), show=False, callback=events.append)
    stages = {e.stage for e in events}
    assert all(isinstance(e, Progress) for e in events)
    assert {"fragments", "agglomerate"} <= stages
    assert np.array_equal(labels, extract_instances(affs, "affinities"))


def test_bad_inputs_raise_clear_errors(sample):
    affs = gt_affinities(sample.neurons[:4, :32, :32])
    with pytest.raises(MapError, match="nearest neighbours"):
        extract_instances(affs, "affinities", offsets=[(0, 0, -1), (0, -1, 0), (-1, 0, 0)])
    with pytest.raises(MapError, match=r"\(C, Z, Y, X\)"):
        extract_instances(affs[0], "affinities")
    with pytest.raises(ConfigError, match="merge_function .max. is not available"):
        NeuronConfig(merge_function="max")
    with pytest.raises(ConfigError, match="takes a NeuronConfig"):
        from napari_emseg.postprocess import MitoConfig

        extract_instances(affs, "affinities", MitoConfig())
    with pytest.raises(ConfigError, match="no instance extraction for target 'reconstruction'"):
        extract_instances(affs, "reconstruction")
    assert {"mean", "median", "quantile_75"} <= set(MERGE_FUNCTIONS)
    # long-range channels after the first three are accepted (and ignored by waterz)
    long_range = np.concatenate([affs, affs[:1]])
    offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0)]
    assert extract_instances(long_range, "affinities", offsets=offsets).max() >= 1


def test_neurons_are_not_joined_across_separate_images(sample):
    """A stack of unrelated sections (each turned its own way): no segment spans two of them,
    whatever the z-affinities say; the serial stack keeps its 3D neurons."""
    from napari_emseg.postprocess.affinities import unrelated_sections

    serial = sample.neurons[:6]
    apart = np.stack([np.rot90(s, k) for k, s in enumerate(serial)])
    affs = gt_affinities(apart, noise=0.05, seed=2)
    affs[0, 1:] = 1.0  # z-affinities claim everything continues
    assert unrelated_sections(affs) == [0, 1, 2, 3, 4]
    labels = extract_instances(affs, "affinities", NeuronConfig(min_size=0))
    assert not any(np.isin(labels[z][labels[z] > 0], labels[z + 1]).any() for z in range(5))
    assert neuron_metrics(labels[2], apart[2])["arand"] < 0.05  # in-plane, each image is whole
    serial_affs = gt_affinities(serial, noise=0.05, seed=2)
    assert unrelated_sections(serial_affs) == []
    joined = extract_instances(serial_affs, "affinities", NeuronConfig(min_size=0))
    assert neuron_metrics(joined, serial)["arand"] < 0.05

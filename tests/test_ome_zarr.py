"""Issue 16, OME-Zarr outputs: ``segment --out seg.ome.zarr`` and the napari writer write NGFF 0.4
multiscale images (level 0 as a plain zarr output, then a pyramid), marked, atomic, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_emseg._outputs import UnsafeOutputError, is_ours
from napari_emseg.cli.main import main
from napari_emseg.io import open_volume, write_volume
from napari_emseg.ngff import multiscales_of, pyramid_factors, write_multiscale

SEG = ["--tile", "8,32,32", "--block", "8,64,64", "--device", "cpu", "--dtype", "uint8"]
VS = (40.0, 8.0, 8.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same segmentation written as plain zarr and as OME-Zarr, and the OME command."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    d = tmp_path_factory.mktemp("ome")
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    save_checkpoint(d / "mito.safetensors", net)
    em = make_synthetic_em((12, 140, 140), seed=1)
    write_volume(d / "raw.zarr", em.raw, voxel_size=VS)
    base = ["-q", "segment", "--image", str(d / "raw.zarr"), "--model", str(d / "mito.safetensors"), *SEG,
            *(f"--post={kv}" for kv in ("seed_foreground=0.55", "seed_contour=0.6", "seed_distance=0.45",
                                        "foreground_threshold=0.45", "min_seed_size=1", "min_size=0"))]
    assert main([*base, "--out", str(d / "seg.zarr")]) == 0
    ome = [*base, "--out", str(d / "seg.ome.zarr")]
    assert main(ome) == 0
    return d, ome


def _ms(group: Path) -> dict:
    return dict(zarr.open_group(str(group), mode="r").attrs)["multiscales"][0]


def _mean2(a: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks in y/x of (..., y, x) uint8, the last row/column repeated when odd."""
    pad = [(0, 0)] * (a.ndim - 2) + [(0, a.shape[-2] % 2), (0, a.shape[-1] % 2)]
    b = np.pad(a.astype(np.float32), pad, mode="edge")
    m = b.reshape(*b.shape[:-2], b.shape[-2] // 2, 2, b.shape[-1] // 2, 2).mean(axis=(-3, -1))
    return np.clip(np.round(m), 0, 255).astype(np.uint8)


def test_segment_ome_zarr_level0_is_the_plain_output(runs):
    d, _ = runs
    for name in ("predictions", "labels"):
        plain = zarr.open_array(str(d / "seg.zarr" / name), mode="r")
        level0 = zarr.open_array(str(d / "seg.ome.zarr" / name / "0"), mode="r")
        np.testing.assert_array_equal(level0[:], plain[:])
        assert level0.chunks == plain.chunks and level0.dtype == plain.dtype
        assert dict(level0.attrs)["resolution"] == list(VS)
    assert zarr.open_array(str(d / "seg.zarr/labels"), mode="r")[:].max() > 0
    assert (d / "seg.ome.zarr/provenance.json").is_file()


def test_segment_ome_zarr_metadata_and_pyramid(runs):
    d, _ = runs
    pred, labels = d / "seg.ome.zarr/predictions", d / "seg.ome.zarr/labels"
    ms = _ms(pred)
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space", "space"]
    assert [a.get("unit") for a in ms["axes"]] == [None, "nanometer", "nanometer", "nanometer"]
    assert [ds["path"] for ds in ms["datasets"]] == ["0", "1", "2"]  # 140 -> 70 -> 35 in y/x
    scales = [ds["coordinateTransformations"][0] for ds in ms["datasets"]]
    assert all(s["type"] == "scale" for s in scales)
    assert [s["scale"] for s in scales] == [[1, 40, 8, 8], [1, 40, 16, 16], [1, 40, 32, 32]]
    assert ms["datasets"][1]["coordinateTransformations"][1] == {"type": "translation",
                                                                  "translation": [0, 0, 4, 4]}
    p0, p1, p2 = (zarr.open_array(str(pred / str(i)), mode="r")[:] for i in range(3))
    assert p1.shape == (3, 12, 70, 70) and p2.shape == (3, 12, 35, 35)
    np.testing.assert_array_equal(p1, _mean2(p0))  # z kept: 40 nm is over twice 8 nm
    np.testing.assert_array_equal(p2, _mean2(p1))

    attrs = dict(zarr.open_group(str(labels), mode="r").attrs)
    assert attrs["image-label"]["version"] == "0.4"
    ms = attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"] and ms["type"] == "nearest"
    assert [len(ds["coordinateTransformations"]) for ds in ms["datasets"]] == [1, 1, 1]  # no shift
    l0, l1, l2 = (zarr.open_array(str(labels / str(i)), mode="r")[:] for i in range(3))
    np.testing.assert_array_equal(l1, l0[:, ::2, ::2])
    np.testing.assert_array_equal(l2, l0[:, ::4, ::4])
    assert set(np.unique(l2)) <= set(np.unique(l0))  # nearest: no new ids
    for node in (pred, labels, *(pred / str(i) for i in range(3)), *(labels / str(i) for i in range(3))):
        assert is_ours(node), node


def test_segment_ome_zarr_resumes_and_is_read_as_input(runs):
    d, ome = runs
    before = zarr.open_array(str(d / "seg.ome.zarr/labels/1"), mode="r")[:]
    made = (d / "seg.ome.zarr/predictions/1").stat().st_ino
    assert main(ome) == 0  # the same command again: every block found, the maps' pyramid kept
    np.testing.assert_array_equal(zarr.open_array(str(d / "seg.ome.zarr/labels/1"), mode="r")[:], before)
    assert (d / "seg.ome.zarr/predictions/1").stat().st_ino == made
    assert not [p for p in (d / "seg.ome.zarr").rglob(".*partial*")]
    vol = open_volume(f"{d}/seg.ome.zarr:labels")  # the CLI reads level 0 with its voxel size
    assert vol.voxel_size == VS and vol.data.shape == (12, 140, 140)


def test_write_multiscale_refuses_foreign_data(tmp_path):
    foreign = zarr.open_group(str(tmp_path / "theirs.ome.zarr"), mode="w", zarr_format=2)
    foreign.create_array("0", shape=(4, 8, 8), dtype="u4", fill_value=7)
    with pytest.raises(UnsafeOutputError, match="not written by napari-emseg"):
        write_multiscale(tmp_path / "theirs.ome.zarr", np.zeros((4, 8, 8), np.uint32))
    assert zarr.open_array(str(tmp_path / "theirs.ome.zarr/0"), mode="r")[0, 0, 0] == 7
    # our own output is replaced whole, atomically, with the new pyramid
    ours = tmp_path / "ours.ome.zarr"
    write_multiscale(ours, np.ones((4, 300, 300), np.uint32), voxel_size=(8, 8, 8))
    assert [ds["path"] for ds in _ms(ours)["datasets"]] == ["0", "1", "2", "3"]
    write_multiscale(ours, np.full((4, 100, 100), 5, np.uint32), voxel_size=(8, 8, 8))
    assert [ds["path"] for ds in _ms(ours)["datasets"]] == ["0", "1"] and not (ours / "2").exists()
    assert zarr.open_array(str(ours / "1"), mode="r")[:].tolist() == np.full((2, 50, 50), 5).tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.ome.zarr", "theirs.ome.zarr"]


def test_napari_writer_saves_labels_as_ome_zarr(tmp_path):
    from napari_emseg._reader import get_reader
    from napari_emseg._writer import write_labels

    labels = np.random.default_rng(0).integers(0, 9, (5, 130, 130)).astype(np.uint16)
    [path] = write_labels(str(tmp_path / "edit.ome.zarr"), labels, {"scale": (30.0, 4.0, 4.0), "name": "seg"})
    assert path.endswith("edit.ome.zarr")
    attrs = dict(zarr.open_group(path, mode="r").attrs)
    assert "image-label" in attrs and is_ours(path)
    [(data, meta, kind)] = get_reader(path)(path)
    assert kind == "labels" and meta["multiscale"] and tuple(meta["scale"]) == (30.0, 4.0, 4.0)
    assert [lv.shape for lv in data] == [(5, 130, 130), (5, 65, 65), (5, 33, 33)]
    np.testing.assert_array_equal(data[0].compute(), labels)
    # a multiscale layer (what napari hands over after opening a pyramid) saves its finest level
    [again] = write_labels(str(tmp_path / "again.ome.zarr"), data, {"scale": meta["scale"]})
    np.testing.assert_array_equal(zarr.open_array(f"{again}/0", mode="r")[:], labels)


def test_pyramid_factors_follow_anisotropy():
    assert pyramid_factors((100, 1000, 1000), (30, 8, 8)) == [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert pyramid_factors((10, 64, 64), (8, 8, 8)) == []
    assert pyramid_factors((1, 200, 200), (1, 1, 1)) == [(1, 2, 2), (1, 2, 2)]  # one slice stays one
    ms = multiscales_of(3, "x", [(1, 2, 2)], None, "maps")
    assert all("unit" not in a for a in ms["axes"])  # unknown voxel size: no unit claimed
    assert ms["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 2.0, 2.0]}, {"type": "translation", "translation": [0.0, 0.5, 0.5]}]


def test_interrupted_before_the_pyramid_is_finished_by_the_same_command(runs):
    d, ome = runs
    pred = d / "seg.ome.zarr/predictions"
    zarr.open_group(str(pred), mode="r+").attrs.clear()  # as if stopped after level 0 was complete
    for level in ("1", "2"):
        __import__("shutil").rmtree(pred / level)
    assert main(ome) == 0
    assert [ds["path"] for ds in _ms(pred)["datasets"]] == ["0", "1", "2"] and is_ours(pred)
    assert zarr.open_array(str(pred / "2"), mode="r").shape == (3, 12, 35, 35)


def test_rerun_and_export_keep_ome_zarr(runs, tmp_path):
    from napari_emseg.rerun import default_rerun_path
    from napari_emseg.workflows import export_labels

    d, _ = runs
    assert default_rerun_path(d / "seg.ome.zarr") == d / "seg-rerun.ome.zarr"
    assert main(["-q", "rerun", str(d / "seg.ome.zarr"), "--device", "cpu"]) == 0  # labels identical
    assert "image-label" in dict(zarr.open_group(str(d / "seg-rerun.ome.zarr/labels"), mode="r").attrs)
    # what the Segment widget's export calls: an edited layer saved as an OME-Zarr label image
    edited = zarr.open_array(str(d / "seg.ome.zarr/labels/0"), mode="r")[:]
    path = export_labels(tmp_path / "edited.ome.zarr", edited, VS, details={"layer": "seg"})
    level0 = dict(zarr.open_array(f"{path}/0", mode="r").attrs)
    assert level0["layer"] == "seg" and level0["resolution"] == list(VS)
    assert _ms(path)["datasets"][1]["coordinateTransformations"][0]["scale"] == [40, 16, 16]


def test_blockwise_segment_writes_ome_zarr(runs):
    from napari_emseg.blockwise import dask_client

    d, ome = runs
    out = d / "blocks.ome.zarr"
    args = [a if a != str(d / "seg.ome.zarr") else str(out) for a in ome]
    with dask_client(None, 1, processes=False) as client:
        assert main([*args, "--blocks", "8,64,64", "--scheduler", client.scheduler.address]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(out / "predictions/0"), mode="r")[:],
                                  zarr.open_array(str(d / "seg.zarr/predictions"), mode="r")[:])
    assert [ds["path"] for ds in _ms(out / "predictions")["datasets"]] == ["0", "1", "2"]
    labels = out / "labels"
    assert "image-label" in dict(zarr.open_group(str(labels), mode="r").attrs)
    l0 = zarr.open_array(str(labels / "0"), mode="r")[:]
    assert l0.max() > 0
    np.testing.assert_array_equal(zarr.open_array(str(labels / "1"), mode="r")[:], l0[:, ::2, ::2])


def test_segment_refuses_another_tools_image_in_an_ome_zarr(runs, tmp_path, capsys):
    d, ome = runs
    theirs = zarr.open_group(str(tmp_path / "their.ome.zarr/predictions"), mode="w", zarr_format=2)
    theirs.attrs.update({"multiscales": [{"version": "0.4", "axes": [], "datasets": [{"path": "s0"}]}]})
    args = [a if a != str(d / "seg.ome.zarr") else str(tmp_path / "their.ome.zarr") for a in ome]
    assert main(args) == 2
    assert "not written by napari-emseg" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "their.ome.zarr/predictions").iterdir()) == [".zattrs", ".zgroup"]


def test_segment_job_writes_ome_zarr(runs, tmp_path):
    """The library call behind the CLI and the Segment widget."""
    from napari_emseg.postprocess import MitoConfig
    from napari_emseg.progress import drain
    from napari_emseg.provenance import read_bundle
    from napari_emseg.workflows import SegmentConfig, segment_job

    d, _ = runs
    image = open_volume(d / "raw.zarr")
    cfg = SegmentConfig(mitochondria=MitoConfig(min_size=0, seed_foreground=0.55, seed_contour=0.6, seed_distance=0.45,
                                                foreground_threshold=0.45, min_seed_size=1))
    cfg = cfg.replace(inference=cfg.inference.replace(tile=(8, 32, 32), block=(8, 64, 64), device="cpu", dtype="uint8"))
    seg = drain(segment_job(d / "mito.safetensors", image, cfg, out=tmp_path / "w.ome.zarr"), show=False)
    assert seg.paths == {"predictions": str(tmp_path / "w.ome.zarr/predictions/0"),
                         "labels": str(tmp_path / "w.ome.zarr/labels")}
    assert [ds["path"] for ds in _ms(tmp_path / "w.ome.zarr/labels")["datasets"]] == ["0", "1", "2"]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "w.ome.zarr/labels/0"), mode="r")[:], seg.labels)
    assert _ms(tmp_path / "w.ome.zarr/predictions")["type"] == "mean"
    assert read_bundle(tmp_path / "w.ome.zarr")["results"]["outputs"]["labels"] == seg.paths["labels"]


def test_zarr_v3_gets_ngff_05(tmp_path):
    from napari_emseg._reader import read_volumes

    labels = np.arange(4 * 130 * 130, dtype=np.uint32).reshape(4, 130, 130)
    path = write_multiscale(tmp_path / "v3.ome.zarr", labels, voxel_size=(8, 8, 8), zarr_format=3)
    ome = dict(zarr.open_group(path, mode="r").attrs)["ome"]
    assert ome["version"] == "0.5" and "image-label" in ome and ome["multiscales"][0]["name"] == "v3.ome.zarr"
    assert [ds["path"] for ds in ome["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert (tmp_path / "v3.ome.zarr/2/zarr.json").is_file() and is_ours(tmp_path / "v3.ome.zarr/2")
    [(data, meta, kind)] = read_volumes(path)
    assert kind == "labels" and [lv.shape for lv in data] == [(4, 130, 130), (2, 65, 65), (1, 33, 33)]
    np.testing.assert_array_equal(data[2].compute(), labels[::4, ::4, ::4])

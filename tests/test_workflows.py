"""segment_job: prediction then instance extraction, written together; re-run without predicting."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_emseg.cli.main import main
from napari_emseg.io import open_volume, write_volume
from napari_emseg.models import ModelConfig, build_model, save_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.postprocess.mitochondria import MitoConfig
from napari_emseg.progress import drain
from napari_emseg.workflows import SegmentConfig, postprocess_job, segment_job, write_labels


@pytest.fixture
def tiny_bcd(tmp_path):
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    return save_checkpoint(tmp_path / "bcd.safetensors", model)


def test_segment_job_writes_predictions_and_labels(tiny_em, tiny_bcd, tmp_path):
    cfg = SegmentConfig(mitochondria=MitoConfig(min_size=0, seed_foreground=0.0, seed_contour=1.0,
                                                seed_distance=0.0, foreground_threshold=0.0))
    seg = drain(segment_job(tiny_bcd, tiny_em.raw, cfg, out=tmp_path / "s.zarr", voxel_size=tiny_em.voxel_size),
                show=False)
    assert seg.target == "bcd" and seg.labels.shape == tiny_em.raw.shape
    vol = open_volume(seg.paths["labels"])
    np.testing.assert_array_equal(vol.data.compute(), seg.labels)
    assert vol.voxel_size == tiny_em.voxel_size
    assert open_volume(f"{tmp_path}/s.zarr:predictions", channel=0).data.shape == tiny_em.raw.shape
    # new thresholds, no re-prediction: a stricter size filter keeps fewer objects
    strict = drain(postprocess_job(seg, cfg.replace(mitochondria=cfg.mitochondria.replace(min_size=10**9))),
                   show=False)
    assert strict.max() == 0


def test_labels_to_tiff_with_voxel_size(tmp_path):
    labels = np.arange(2 * 4 * 4, dtype=np.uint32).reshape(2, 4, 4)
    path = write_labels(tmp_path / "l.tif", labels, (40.0, 8.0, 8.0))
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    assert open_volume(path).voxel_size == pytest.approx((40, 8, 8))


@pytest.mark.parametrize("top", [7, 2**20])  # 16-bit (ImageJ Info) and 32-bit (description)
def test_labels_tiff_records_how_they_were_made(tmp_path, top):
    import json

    labels = np.zeros((2, 4, 4), np.uint32)
    labels[0, 0, 0] = top
    path = write_labels(tmp_path / "l.tif", labels, (40.0, 8.0, 8.0), {"model": "m.safetensors", "target": "bcd"})
    with tifffile.TiffFile(path) as tif:
        text = tif.imagej_metadata["Info"] if tif.imagej_metadata else tif.pages[0].description
        np.testing.assert_array_equal(tif.asarray(), labels)  # 4 columns: still a (2, 4, 4) stack, not RGBA
        assert len(tif.pages) == 2 and tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert json.loads(text)["napari_emseg"] == {"model": "m.safetensors", "target": "bcd"}


def test_cli_segment_task_mismatch_is_explained(tiny_em, tiny_bcd, tmp_path, capsys):
    write_volume(tmp_path / "in.zarr/raw", tiny_em.raw, voxel_size=tiny_em.voxel_size)
    rc = main(["-q", "segment", "--image", f"{tmp_path}/in.zarr:raw", "--model", str(tiny_bcd),
               "--out", str(tmp_path / "o.zarr"), "--task", "neurons"])
    assert rc == 2 and "not a neurons target" in capsys.readouterr().err
    rc = main(["-q", "segment", "--image", f"{tmp_path}/in.zarr:raw", "--model", str(tiny_bcd),
               "--out", str(tmp_path / "o.zarr"), "--post", "min_size=0", "--labels-format", "tif"])
    assert rc == 0 and (tmp_path / "o.zarr" / "labels.tif").exists()


def test_cli_segment_needs_a_model_or_a_preset(tiny_em, tiny_bcd, tmp_path, capsys, monkeypatch):
    import napari_emseg.models.registry as registry

    write_volume(tmp_path / "in.zarr/raw", tiny_em.raw, voxel_size=tiny_em.voxel_size)
    base = ["-q", "segment", "--image", f"{tmp_path}/in.zarr:raw", "--out", str(tmp_path / "o.zarr")]
    assert main(base) == 2 and "--preset" in capsys.readouterr().err
    assert main([*base, "--model", str(tiny_bcd), "--preset", "neurons"]) == 2
    assert "not both" in capsys.readouterr().err
    monkeypatch.setattr(registry, "bundled_dir", lambda: tmp_path / "nothing-here")
    assert main([*base, "--preset", "mitochondria"]) == 2
    assert "fine-tune one" in capsys.readouterr().err


def test_in_memory_segmentation_exports_with_its_provenance(tiny_em, tiny_bcd, tmp_path):
    import json

    from napari_emseg.provenance import read_bundle
    from napari_emseg.workflows import export_labels

    cfg = SegmentConfig(mitochondria=MitoConfig(min_size=0, seed_foreground=0.0, seed_contour=1.0,
                                                seed_distance=0.0, foreground_threshold=0.0))
    plain = drain(segment_job(tiny_bcd, tiny_em.raw, cfg, voxel_size=tiny_em.voxel_size), show=False)
    assert plain.provenance is None  # nothing written, nothing built
    seg = drain(segment_job(tiny_bcd, tiny_em.raw, cfg, voxel_size=tiny_em.voxel_size, provenance=True), show=False)
    assert seg.provenance["input"]["checksum"]["digest"] and not list(tmp_path.glob("*.json"))
    edited = seg.labels.copy()
    edited[0] = 0  # a hand edit
    chosen = cfg.mitochondria.replace(min_size=7)
    path = export_labels(tmp_path / "edited", edited, tiny_em.voxel_size, seg, chosen, {"layer": "raw mitochondria"})
    assert path.endswith("edited.zarr")
    bundle = read_bundle(path)
    assert bundle["config"]["mitochondria"]["min_size"] == 7 and bundle["export"]["layer"] == "raw mitochondria"
    assert bundle["results"]["n_objects"] == int(edited.max())
    assert bundle["model"]["weights_sha256"] == seg.provenance["model"]["weights_sha256"]
    assert json.loads((tmp_path / "edited.zarr.provenance.json").read_text()) == bundle
    assert seg.provenance["config"]["mitochondria"]["min_size"] == 0  # the job's own record is unchanged


# -- post-processing calibrated at fine-tuning, stored in the checkpoint ----------------------------
EVERYTHING = MitoConfig(min_size=0, seed_foreground=0.0, seed_contour=1.0, seed_distance=0.0, foreground_threshold=0.0)


@pytest.fixture
def calibrated_bcd(tmp_path):
    """A checkpoint whose card holds post-processing calibrated on painted slices (as fine_tune writes)."""
    model = build_model(ModelConfig(arch="resunet", widths=(8, 16), anisotropic_levels=1),
                        head_info("bcd", tile=(4, 32, 32)))
    card = {"postprocess": {"target": "bcd", "config": EVERYTHING.to_dict(), "source": "calibrated on painted slices",
                            "choice": "calibrated (the defaults find no objects)", "metric": "ap", "score": 0.3,
                            "default_score": 0.0, "objects": 12, "default_objects": 0, "slices": [3, 8], "axis": 0}}
    return save_checkpoint(tmp_path / "calibrated.safetensors", model, card=card)


def test_segment_uses_the_calibration_unless_the_user_gives_settings(tiny_em, calibrated_bcd, tmp_path):
    import zarr

    from napari_emseg.provenance import read_bundle

    seg = drain(segment_job(calibrated_bcd, tiny_em.raw, SegmentConfig(), out=tmp_path / "s.zarr",
                            voxel_size=tiny_em.voxel_size), show=False)
    assert seg.postprocess_source["source"] == "calibrated on painted slices" and seg.labels.max() > 0
    attrs = dict(zarr.open_array(seg.paths["labels"], mode="r").attrs)
    assert attrs["postprocess"] == EVERYTHING.to_dict() and attrs["postprocess_source"] == seg.postprocess_source
    bundle = read_bundle(tmp_path / "s.zarr")
    assert bundle["config"]["mitochondria"] == EVERYTHING.to_dict()  # rerun makes the same labels
    assert bundle["postprocess_source"]["source"] == "calibrated on painted slices"
    # settings the user gave win; the defaults alone are "none given"
    mine = EVERYTHING.replace(min_size=10**9)
    seg = drain(segment_job(calibrated_bcd, tiny_em.raw, SegmentConfig(mitochondria=mine)), show=False)
    assert seg.postprocess_source == {"source": "user"} and seg.labels.max() == 0
    seg = drain(segment_job(calibrated_bcd, tiny_em.raw, SegmentConfig(), calibrated=False), show=False)
    assert seg.postprocess_source["source"].startswith("defaults")


def test_cli_segment_uses_the_calibration_and_post_overrides_win(tiny_em, calibrated_bcd, tmp_path, capsys):
    import zarr

    write_volume(tmp_path / "in.zarr/raw", tiny_em.raw, voxel_size=tiny_em.voxel_size)
    base = ["-q", "segment", "--image", f"{tmp_path}/in.zarr:raw", "--model", str(calibrated_bcd)]
    assert main([*base[1:], "--out", str(tmp_path / "a.zarr")]) == 0  # without -q: says which settings
    assert "post-processing: calibrated on painted slices" in capsys.readouterr().out
    attrs = dict(zarr.open_array(str(tmp_path / "a.zarr" / "labels"), mode="r").attrs)
    assert attrs["postprocess"] == EVERYTHING.to_dict()
    assert attrs["postprocess_source"]["source"] == "calibrated on painted slices"
    assert main([*base, "--out", str(tmp_path / "b.zarr"), "--post", "min_size=5"]) == 0
    assert "post-processing" not in capsys.readouterr().out  # -q: the result lines only
    attrs = dict(zarr.open_array(str(tmp_path / "b.zarr" / "labels"), mode="r").attrs)
    assert attrs["postprocess"] == EVERYTHING.replace(min_size=5).to_dict()  # the user's field, the rest calibrated
    assert attrs["postprocess_source"] == {"source": "user", "base": "calibrated on painted slices",
                                           "overrides": ["min_size=5"]}
    assert main([*base, "--out", str(tmp_path / "c.zarr"), "--no-calibration"]) == 0
    attrs = dict(zarr.open_array(str(tmp_path / "c.zarr" / "labels"), mode="r").attrs)
    assert attrs["postprocess"] == MitoConfig().to_dict()

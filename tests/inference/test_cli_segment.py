"""``napari-emseg segment``: a checkpoint over a volume file, into OUT.zarr/predictions."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_emseg.cli.main import main
from napari_emseg.io import write_volume


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "mito.safetensors"
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    save_checkpoint(path, net)
    return path


def test_segment_writes_predictions_and_resumes(tmp_path, checkpoint, capsys):
    from napari_emseg.data.synthetic import make_synthetic_em

    em = make_synthetic_em((12, 64, 64), seed=1)
    write_volume(tmp_path / "raw.zarr", em.raw, voxel_size=em.voxel_size)
    args = ["-q", "segment", "--image", str(tmp_path / "raw.zarr"), "--model", str(checkpoint),
            "--out", str(tmp_path / "seg.zarr"), "--tile", "8,32,32", "--block", "8,32,32",
            "--device", "cpu", "--dtype", "uint8"]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "seg.zarr/predictions: (3, 12, 64, 64) uint8 (foreground, contour, distance)" in printed[0]
    assert len(printed) == 2 and printed[1].endswith("labels: instance labels")  # -q: the result only
    pred = zarr.open_array(str(tmp_path / "seg.zarr" / "predictions"), mode="r")
    attrs = dict(pred.attrs)
    assert attrs["complete"] is True and attrs["scale"] == 255 and attrs["target"] == "bcd"
    assert attrs["resolution"] == list(em.voxel_size) and attrs["model"]["card"] is not None
    assert attrs["source"]["model"] == str(checkpoint)
    first = pred[:]
    assert first.std() > 0
    # the same command again finds every block written and predicts nothing
    assert main(args) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "seg.zarr" / "predictions"), mode="r")[:], first)


def test_segment_reports_bad_input_in_one_line(tmp_path, checkpoint, capsys):
    assert main(["segment", "--image", str(tmp_path / "missing.tif"), "--model", str(checkpoint),
                 "--out", str(tmp_path / "o.zarr")]) == 2
    assert "missing.tif" in capsys.readouterr().err
    np.save(tmp_path / "raw.npy", np.zeros((4, 32, 32), np.uint8))
    assert main(["segment", "--image", str(tmp_path / "raw.npy"), "--model", str(checkpoint),
                 "--out", str(tmp_path / "o.zarr"), "--tile", "8,32"]) == 2
    assert "z,y,x" in capsys.readouterr().err


def test_config_from_arguments():
    import argparse

    from napari_emseg.cli import cmd_segment

    p = argparse.ArgumentParser()
    cmd_segment.add_arguments(p)
    args = p.parse_args(["--image", "a", "--model", "b", "--out", "c", "--ortho", "--tta", "--restart",
                         "--tile", "64,64,64", "--set", "blend=linear", "--set", "overlap=0.5"])
    cfg = cmd_segment.build_config(args)
    assert (cfg.mode, cfg.tta, cfg.resume, cfg.tile, cfg.blend, cfg.overlap) == (
        "ortho", True, False, (64, 64, 64), "linear", 0.5)

"""Issue 14 "Nothing lost, ever": bad input stops a command with one line and exit status 2.

Each case runs the CLI in-process on small arrays and checks the exit status, that stderr is one
line naming the problem, that the inputs are byte-for-byte intact, and that no output was left.
SIGTERM is covered in ``test_sigterm.py``, forged checkpoints in ``models/test_validate.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_emseg.cli.main import main
from napari_emseg.io import open_volume, write_volume


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted([p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI, expect exit 2 and a single stderr line holding every needle."""
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    path = tmp_path_factory.mktemp("model") / "mito.safetensors"
    save_checkpoint(path, build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1),
                                      head_info("bcd", tile=(4, 32, 32))))
    return path


@pytest.fixture
def nan_image(tmp_path):
    img = np.random.default_rng(0).random((6, 48, 48)).astype(np.float32)
    img[3, 10:20, 10:20] = np.nan  # a 10x10 patch
    path = tmp_path / "nan.npy"
    np.save(path, img)
    return path


@pytest.fixture
def painted(tmp_path):
    lab = np.zeros((6, 48, 48), np.uint16)  # two painted slices, 0 there is background
    lab[1, 5:25, 5:25] = 1
    lab[4, 20:40, 20:40] = 2
    path = tmp_path / "painted.npy"
    np.save(path, lab)
    return path


# -- a 10x10 patch of NaN ----------------------------------------------------------------------
def test_nan_patch_stops_segment_before_any_output(tmp_path, nan_image, model, capsys):
    before = digest(nan_image)
    fails(capsys, ["segment", "--image", str(nan_image), "--model", str(model), "--out", str(tmp_path / "seg.zarr"),
                   "--device", "cpu"], "nan.npy: image has 100 NaN voxels", "first at z=3,y=10,x=10")
    assert not (tmp_path / "seg.zarr").exists() and digest(nan_image) == before


def test_nan_found_in_a_streamed_block_names_the_voxel(tmp_path, model):
    """Volumes too big to sample whole are checked block by block as they are read."""
    from napari_emseg._finite import NonFiniteError
    from napari_emseg.inference import InferenceConfig, predict_tiled
    from napari_emseg.models import load_model
    from napari_emseg.progress import drain

    img = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
    img[6, 50, 40] = np.inf
    cfg = InferenceConfig(device="cpu", block=(4, 32, 32), norm_samples=1000)
    with pytest.raises(NonFiniteError, match=r"1 infinite voxels.*first at z=6,y=50,x=40"):
        drain(predict_tiled(load_model(model), img, None, cfg), show=False)


def test_nan_patch_stops_finetune_naming_it(tmp_path, nan_image, painted, capsys):
    before = digest(nan_image, painted)
    out = tmp_path / "m.safetensors"
    err = fails(capsys, ["finetune", "--image", str(nan_image), "--labels", str(painted), "--task", "mitochondria",
                         "--out", str(out), "--steps", "2", "--patch", "4,32,32"],
                "100 NaN voxels", "first at z=3,y=10,x=10")
    assert "learning rate" not in err
    assert not out.exists() and digest(nan_image, painted) == before


def test_nan_patch_stops_pretraining_naming_it(tmp_path, nan_image, capsys):
    from napari_emseg.cli.pretrain import main as pretrain

    code = pretrain(["-q", "--method", "mscon", "--data", str(nan_image), "--out", str(tmp_path / "run"),
                     "--max-steps", "2", "--set", "data.patch=2,16,16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "NaN voxels" in err and "nan.npy" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- 3- and 4-slice TIFFs, (1, 3, Y, X) arrays, --channel and --axes ----------------------------
@pytest.mark.parametrize("n", [3, 4])
def test_few_slice_tiff_is_slices_not_channels(tmp_path, n):
    vol = np.random.default_rng(n).integers(0, 200, (n, 24, 24)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", vol)  # tifffile's default tags (3|4, Y, X) as RGB planes
    np.testing.assert_array_equal(open_volume(tmp_path / "img.tif").data.compute(), vol)
    labels = (vol > 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    np.testing.assert_array_equal(open_volume(tmp_path / "lab.tif").data.compute(), labels)
    np.save(tmp_path / "stack.npy", vol[None])  # (1, n, Y, X): the singleton is not a channel axis
    np.testing.assert_array_equal(open_volume(tmp_path / "stack.npy").data.compute(), vol)


def test_channel_on_a_volume_without_channels_is_refused(tmp_path, capsys):
    vol = np.random.default_rng(0).integers(0, 200, (3, 24, 24)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", vol)
    fails(capsys, ["info", str(tmp_path / "img.tif"), "--channel", "0"], "img.tif", "no channel axis", "--axes")
    # named axes make the first axis channels: then --channel picks one
    assert main(["-q", "info", str(tmp_path / "img.tif"), "--axes", "cyx", "--channel", "1", "--json"]) == 0
    assert '"shape": [\n    1,\n    24,\n    24\n  ]' in capsys.readouterr().out
    fails(capsys, ["info", str(tmp_path / "img.tif"), "--axes", "cyx"], "3 channels", "--channel")
    fails(capsys, ["info", str(tmp_path / "img.tif"), "--axes", "zyxc"], "names 4 axes", "has 3")
    fails(capsys, ["info", str(tmp_path / "img.tif"), "--axes", "zqx"], "--axes", "t, c, z, y, x")


def test_evaluate_reads_three_slice_tiffs_as_volumes(tmp_path, capsys):
    gt = np.zeros((3, 32, 32), np.uint16)
    gt[:, 4:12, 4:12] = 1
    gt[:, 18:28, 18:28] = 2
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    tifffile.imwrite(tmp_path / "pred.tif", gt)
    assert main(["-q", "evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(tmp_path / "gt.tif"),
                 "--task", "mitochondria", "--json"]) == 0
    assert '"ap50": 1.0' in capsys.readouterr().out


# -- values checked at the argument boundary -----------------------------------------------------
@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--voxel-size", "50,x,5", "three positive numbers z,y,x"),
    ("--voxel-size", "50,5", "three positive numbers z,y,x"),
    ("--overlap", "1.5", "fraction in [0, 1)"),
    ("--tile", "8,32", "three positive integers"),
    ("--blocks", "0,64,64", "three positive integers"),
    ("--batch", "0", "positive integer"),
    ("--axes", "zzx", "each once"),
])
def test_segment_values_are_checked_before_anything_is_read(tmp_path, model, option, value, needle, capsys):
    np.save(tmp_path / "raw.npy", np.zeros((4, 32, 32), np.uint8))
    fails(capsys, ["segment", "--image", str(tmp_path / "raw.npy"), "--model", str(model),
                   "--out", str(tmp_path / "seg.zarr"), option, value], f"argument {option}", needle)
    assert not (tmp_path / "seg.zarr").exists()


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--steps", "0", "positive integer"),
    ("--patch", "4,x,32", "three positive integers"),
    ("--lr", "-1", "positive number"),
    ("--voxel-size", "nan,4,4", "three positive numbers"),
])
def test_finetune_values_are_checked_before_anything_is_written(tmp_path, painted, option, value, needle, capsys):
    np.save(tmp_path / "raw.npy", np.zeros((6, 48, 48), np.uint8))
    out = tmp_path / "m.safetensors"
    fails(capsys, ["finetune", "--image", str(tmp_path / "raw.npy"), "--labels", str(painted), "--task",
                   "mitochondria", "--out", str(out), option, value], f"argument {option}", needle)
    assert not out.exists()


def test_pretrain_zero_steps_is_refused_before_anything_is_written(tmp_path, nan_image, capsys):
    from napari_emseg.cli.pretrain import main as pretrain

    run = tmp_path / "run"
    for argv in (["--max-steps", "0"], ["--set", "train.max_steps=0"]):
        code = pretrain(["-q", "--method", "mscon", "--data", str(nan_image), "--out", str(run), *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and ("max-steps" in err or "max_steps" in err), err
        assert not run.exists()


def test_out_of_the_wrong_kind_is_refused(tmp_path, model, painted, capsys):
    np.save(tmp_path / "raw.npy", np.random.default_rng(0).integers(0, 255, (6, 48, 48)).astype(np.uint8))
    array = tmp_path / "old.zarr" / "predictions"
    write_volume(array, np.ones((6, 48, 48), np.uint8))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    before = digest(array, a_file)
    base = ["segment", "--image", str(tmp_path / "raw.npy"), "--model", str(model), "--device", "cpu"]
    fails(capsys, [*base, "--out", str(array)], "is a zarr array", "container")
    fails(capsys, [*base, "--out", str(a_file)], "notes.txt", "is a file")
    fails(capsys, [*base, "--out", str(a_file / "seg.zarr")], "is a file, not a folder")
    fails(capsys, ["finetune", "--image", str(tmp_path / "raw.npy"), "--labels", str(painted), "--task",
                   "mitochondria", "--out", str(tmp_path)], "is a folder")
    assert digest(array, a_file) == before


def test_os_errors_from_user_paths_are_one_line(tmp_path, capsys):
    from napari_emseg.cli.main import run_main

    def boom(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    assert run_main(boom, None) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Permission denied" in err and "PermissionError" in err

"""``napari-emseg segment --blocks``: a real (tiny) model on a dask cluster, through the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from napari_emseg.cli.main import main
from napari_emseg.evaluation import adapted_rand
from napari_emseg.io import open_volume
from napari_emseg.models import load_model
from napari_emseg.postprocess import MitoConfig, extract_instances
from napari_emseg.progress import drain


def test_blockwise_cli_predicts_like_one_process_and_stitches(setup, client, tmp_path, capsys):
    root, ckpt = setup
    common = ["-q", "segment", "--image", str(root / "raw.zarr"), "--model", str(ckpt), "--device", "cpu",
              "--dtype", "uint8"]
    # one process, no blocks: the reference maps
    assert main([*common, "--out", str(tmp_path / "one.zarr"), "--block", "6,48,48", "--task", "none"]) == 0
    ref = zarr.open_array(str(tmp_path / "one.zarr/predictions"), mode="r")[:]
    # thresholds inside the untrained model's range, so that there are several objects to stitch
    fg, ct, dist = (np.quantile(ref[c], q) / 255 for c, q in ((0, 0.5), (1, 0.5), (2, 0.5)))
    post = {"seed_foreground": fg, "seed_contour": ct, "seed_distance": dist,
            "foreground_threshold": np.quantile(ref[0], 0.3) / 255, "min_seed_size": 4, "min_size": 20}
    args = [*common, "--out", str(tmp_path / "b.zarr"), "--blocks", "6,48,48",
            "--scheduler", client.scheduler.address, "--task", "mitochondria"]
    for k, v in post.items():
        args += ["--post", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "b.zarr/predictions: (3, 12, 96, 96) uint8" in printed and "labels: instance labels" in printed
    pred = zarr.open_array(str(tmp_path / "b.zarr/predictions"), mode="r")
    np.testing.assert_array_equal(pred[:], ref)  # the same maps, block for block
    attrs = dict(pred.attrs)
    assert attrs["complete"] is True and attrs["target"] == "bcd" and attrs["scale"] == 255
    assert attrs["source"]["model"] == str(ckpt) and attrs["inference"]["distributed"] is True
    labels = open_volume(f"{tmp_path}/b.zarr:labels")
    single = extract_instances(ref, "bcd", MitoConfig(**post))
    assert single.max() >= 5
    assert adapted_rand(labels.data.compute(), single).error < 0.01
    # either path resumes the other's output: one-process inference finds every block written
    model = load_model(ckpt)
    from napari_emseg.inference import InferenceConfig, predict_tiled

    cfg = InferenceConfig(device="cpu", dtype="uint8", block=(6, 48, 48))
    events = []
    drain(predict_tiled(model, open_volume(str(root / "raw.zarr")), str(tmp_path / "b.zarr/predictions"), cfg),
          show=False, callback=events.append)
    assert not [e for e in events if e.preview is not None]  # no block predicted again
    # and the same blockwise command again predicts nothing and keeps the labels
    before = labels.data.compute()
    assert main(args) == 0
    np.testing.assert_array_equal(open_volume(f"{tmp_path}/b.zarr:labels").data.compute(), before)


def test_blockwise_options_are_checked(setup, tmp_path, capsys):
    root, ckpt = setup
    base = ["segment", "--image", str(root / "raw.zarr"), "--model", str(ckpt), "--out", str(tmp_path / "o.zarr"),
            "--blocks", "6,48,48"]
    assert main([*base, "--scheduler", "tcp://127.0.0.1:1", "--local-workers", "2"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--task", "neurons"]) == 2
    assert "not a neurons target" in capsys.readouterr().err
    assert main([*base, "--labels-format", "tif"]) == 2
    assert "zarr" in capsys.readouterr().err
    assert main([*base[:-1], "4,48"]) == 2
    assert "z,y,x" in capsys.readouterr().err


def test_quiet_prints_only_the_result_with_local_workers(setup, tmp_path):
    """``-q``: no INFO line from anything, dask.distributed and its local worker processes included."""
    import subprocess
    import sys

    root, ckpt = setup
    cmd = [sys.executable, "-m", "napari_emseg.cli.main", "-q", "segment", "--image", str(root / "raw.zarr"),
           "--model", str(ckpt), "--device", "cpu", "--out", str(tmp_path / "q.zarr"), "--blocks", "6,48,48",
           "--local-workers", "2", "--post", "min_size=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert len(out) == 2 and "q.zarr/predictions: (3, 12, 96, 96)" in out[0] and out[1].endswith("instance labels")
    # warnings and errors may appear (e.g. a worker's heartbeat cut by the shutdown, with its
    # traceback), INFO and DEBUG records never, in the CLI's format or dask.distributed's
    noise = [ln for ln in done.stderr.splitlines() if re.search(r"(^|[\s-])(INFO|DEBUG)\b", ln)]
    assert not noise, done.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_library_info_lines_are_hidden_even_after_distributed_resets_its_loggers(quiet):
    """dask.distributed sets its loggers to INFO when imported (after the CLI set up logging)."""
    import subprocess
    import sys

    code = ("import logging; from napari_emseg.cli.main import setup_logging; "
            f"setup_logging(0, {quiet}); import distributed; "
            "logging.getLogger('distributed.scheduler').info('theirs'); "
            "logging.getLogger('distributed.nanny').warning('their warning'); "
            "logging.getLogger('napari_emseg.x').info('ours')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr
    assert "theirs" not in err and "WARNING distributed.nanny: their warning" in err
    assert ("INFO napari_emseg.x: ours" in err) is not quiet


def test_blockwise_cuts_results_back_to_micrographs_of_different_sizes(setup, client, tmp_path):
    import tifffile

    root, ckpt = setup
    raw = open_volume(str(root / "raw.zarr")).data.compute()
    sizes = [(96, 60), (50, 96), (70, 70)]
    (tmp_path / "img").mkdir()
    for z, (h, w) in enumerate(sizes):
        tifffile.imwrite(tmp_path / "img" / f"m{z}.tif", raw[2 + 4 * z, :h, :w])
    everything = ["--post", "foreground_threshold=0", "--post", "seed_foreground=0", "--post", "seed_contour=1",
                  "--post", "seed_distance=0", "--post", "min_size=0"]  # labels wherever the network looks
    assert main(["-q", "segment", "--image", str(tmp_path / "img"), "--model", str(ckpt), "--device", "cpu",
                 "--out", str(tmp_path / "b.zarr"), "--blocks", "3,48,48", "--scheduler", client.scheduler.address,
                 "--task", "mitochondria", *everything]) == 0
    maps = zarr.open_array(str(tmp_path / "b.zarr/predictions"), mode="r")[:]
    labels = open_volume(f"{tmp_path}/b.zarr:labels").data.compute()
    for z, (h, w) in enumerate(sizes):
        assert labels[z, :h, :w].all() and maps[:, z, :h, :w].any()
        assert not labels[z, h:].any() and not labels[z, :, w:].any()
        assert not maps[:, z, h:].any() and not maps[:, z, :, w:].any()

"""Issue 14, "nothing lost, ever": every command refuses to replace data it did not write or its
own inputs, one writer per output (lock files), model and folder checked before any work.

Each user-reported case is one test on small arrays: the data is intact afterwards and the
one-line message (exit status 2) names the problem.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_emseg._lock import LockError, lock_path, output_lock, read_lock
from napari_emseg.cli.main import main
from napari_emseg.io import write_volume

SEG = ["--tile", "8,32,32", "--block", "8,32,32", "--device", "cpu", "--dtype", "uint8"]


def _checkpoint(path: Path, seed: int) -> Path:
    import torch

    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    torch.manual_seed(seed)
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    return save_checkpoint(path, net)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return _checkpoint(root / "a.safetensors", 1), _checkpoint(root / "b.safetensors", 2)


@pytest.fixture
def raw():
    return np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)


def _store_with_truth(tmp_path: Path, raw: np.ndarray) -> tuple[Path, np.ndarray]:
    """data.zarr with the user's own raw and ground-truth labels (written by plain zarr, not napari-emseg)."""
    store = tmp_path / "data.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=2)
    root.create_array("raw", data=raw, chunks=raw.shape)
    truth = (np.arange(raw.size, dtype=np.uint32).reshape(raw.shape) // 100)
    root.create_array("labels", data=truth, chunks=raw.shape)
    return store, truth


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    return err


# ---------------------------------------------------------------------------------------------
def test_segment_into_the_inputs_store_never_replaces_its_ground_truth(tmp_path, raw, models, capsys):
    store, truth = _store_with_truth(tmp_path, raw)
    rc = main(["-q", "segment", "--image", f"{store}:raw", "--model", str(models[0]), "--out", str(store), *SEG])
    err = _err(capsys)
    assert rc == 2 and "labels" in err and "not written by napari-emseg" in err
    np.testing.assert_array_equal(zarr.open_array(str(store / "labels"), mode="r")[:], truth)
    np.testing.assert_array_equal(zarr.open_array(str(store / "raw"), mode="r")[:], raw)
    assert not (store / "predictions").exists() and not lock_path(store).exists()
    # --overwrite never replaces what napari-emseg did not write
    assert main(["-q", "segment", "--image", f"{store}:raw", "--model", str(models[0]), "--out", str(store),
                 "--overwrite", *SEG]) == 2
    assert "never replaced" in _err(capsys)
    np.testing.assert_array_equal(zarr.open_array(str(store / "labels"), mode="r")[:], truth)
    # an output that is the input itself is refused as the input, whoever wrote it
    write_volume(tmp_path / "old.zarr" / "predictions", raw)
    assert main(["-q", "segment", "--image", f"{tmp_path / 'old.zarr'}:predictions", "--model", str(models[0]),
                 "--out", str(tmp_path / "old.zarr"), "--overwrite", *SEG]) == 2
    assert "would overwrite the input" in _err(capsys)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "old.zarr" / "predictions"), mode="r")[:], raw)


def test_sample_never_replaces_a_users_raw(tmp_path, raw, capsys):
    store, truth = _store_with_truth(tmp_path, raw)
    assert main(["-q", "sample", "--out", str(store), "--shape", "4,32,32"]) == 2
    err = _err(capsys)
    assert "raw" in err and "not written by napari-emseg" in err
    np.testing.assert_array_equal(zarr.open_array(str(store / "raw"), mode="r")[:], raw)
    # its own earlier sample: refused without --overwrite, replaced with it
    own = tmp_path / "sample.zarr"
    assert main(["-q", "sample", "--out", str(own), "--shape", "4,32,32"]) == 0
    assert main(["-q", "sample", "--out", str(own), "--shape", "4,32,32", "--seed", "1"]) == 2
    assert "--overwrite" in _err(capsys)
    assert main(["-q", "sample", "--out", str(own), "--shape", "4,32,32", "--seed", "1", "--overwrite"]) == 0


def test_finetune_never_writes_its_checkpoint_over_the_painted_labels(tmp_path, raw, capsys):
    painted = np.zeros(raw.shape, np.uint32)
    painted[2, 4:20, 4:20] = 1
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "painted.npy", painted)
    base = ["-q", "finetune", "--image", str(tmp_path / "raw.npy"), "--labels", str(tmp_path / "painted.npy"),
            "--task", "mitochondria", "--steps", "1"]
    assert main([*base, "--out", str(tmp_path / "painted.npy")]) == 2
    err = _err(capsys)
    assert "painted.npy" in err and "would overwrite the input" in err
    np.testing.assert_array_equal(np.load(tmp_path / "painted.npy"), painted)
    (tmp_path / "notes.safetensors").write_bytes(b"my own file")
    assert main([*base, "--out", str(tmp_path / "notes.safetensors"), "--overwrite"]) == 2
    assert "not written by napari-emseg" in _err(capsys)
    assert (tmp_path / "notes.safetensors").read_bytes() == b"my own file"


def test_measure_never_writes_its_csv_over_its_input(tmp_path, capsys):
    labels = np.zeros((4, 16, 16), np.uint32)
    labels[1:3, 2:8, 2:8] = 1
    np.save(tmp_path / "seg.npy", labels)
    before = (tmp_path / "seg.npy").read_bytes()
    assert main(["-q", "measure", str(tmp_path / "seg.npy"), "--voxel-size", "40,8,8", "--csv",
                 str(tmp_path / "seg.npy")]) == 2
    err = _err(capsys)
    assert "--csv" in err and "would overwrite the input" in err
    assert (tmp_path / "seg.npy").read_bytes() == before
    measure = ["-q", "measure", str(tmp_path / "seg.npy"), "--voxel-size", "40,8,8", "--no-skeleton", "--csv"]
    (tmp_path / "mine.csv").write_text("a,b\n1,2\n")
    assert main([*measure, str(tmp_path / "mine.csv"), "--overwrite"]) == 2
    assert "not written by napari-emseg" in _err(capsys)
    assert (tmp_path / "mine.csv").read_text() == "a,b\n1,2\n"
    assert main([*measure, str(tmp_path / "t.csv")]) == 0
    assert main([*measure, str(tmp_path / "t.csv")]) == 2 and "--overwrite" in _err(capsys)
    assert main([*measure, str(tmp_path / "t.csv"), "--overwrite"]) == 0


def test_segment_with_a_pretrained_encoder_is_refused_before_touching_the_output(tmp_path, raw, models, capsys):
    from napari_emseg.models.registry import list_encoders

    write_volume(tmp_path / "raw.zarr", raw, voxel_size=(4.0, 4.0, 4.0))
    out = tmp_path / "seg.zarr"
    common = ["-q", "segment", "--image", str(tmp_path / "raw.zarr"), "--out", str(out), *SEG]
    assert main([*common, "--model", str(models[0]), "--task", "none"]) == 0
    before = zarr.open_array(str(out / "predictions"), mode="r")[:]
    encoder = next(e for e in list_encoders(include_scratch=False) if e.name.startswith("mscon-"))
    capsys.readouterr()
    assert main([*common, "--model", str(encoder.location)]) == 2
    err = _err(capsys)
    assert "no instance extraction" in err and "fine-tune it first" in err
    np.testing.assert_array_equal(zarr.open_array(str(out / "predictions"), mode="r")[:], before)


def test_a_second_model_on_the_same_out_is_refused_and_overwrite_restarts_cleanly(tmp_path, raw, models, capsys):
    write_volume(tmp_path / "raw.zarr", raw, voxel_size=(4.0, 4.0, 4.0))
    out, fresh = tmp_path / "seg.zarr", tmp_path / "fresh.zarr"
    common = ["-q", "segment", "--image", str(tmp_path / "raw.zarr"), "--task", "none", *SEG]
    assert main([*common, "--model", str(models[0]), "--out", str(out)]) == 0
    a = zarr.open_array(str(out / "predictions"), mode="r")[:]
    capsys.readouterr()
    assert main([*common, "--model", str(models[1]), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "another model" in err and "--overwrite" in err
    np.testing.assert_array_equal(zarr.open_array(str(out / "predictions"), mode="r")[:], a)
    assert json.loads((out / "provenance.json").read_text())["model"]["path"] == str(models[0].resolve())
    # --overwrite: every block from model B, the record and the provenance name B, like a fresh run
    assert main([*common, "--model", str(models[1]), "--out", str(out), "--overwrite"]) == 0
    assert main([*common, "--model", str(models[1]), "--out", str(fresh)]) == 0
    b = zarr.open_array(str(out / "predictions"), mode="r")
    np.testing.assert_array_equal(b[:], zarr.open_array(str(fresh / "predictions"), mode="r")[:])
    assert not np.array_equal(b[:], a) and b.attrs["complete"] is True
    assert b.attrs["emseg_inference"]["fingerprint"] == \
        zarr.open_array(str(fresh / "predictions"), mode="r").attrs["emseg_inference"]["fingerprint"]
    assert json.loads((out / "provenance.json").read_text())["model"]["path"] == str(models[1].resolve())


def _hold_lock_in_another_process(out: Path) -> subprocess.Popen:
    code = textwrap.dedent("""
        import signal, sys, time
        from napari_emseg._lock import output_lock
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as the CLI does: unwind, release
        with output_lock(sys.argv[1], ["napari-emseg", "segment", "--out", sys.argv[1]]):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_ones_lock_is_taken_over(
        tmp_path, raw, models, capsys, caplog):
    write_volume(tmp_path / "raw.zarr", raw, voxel_size=(4.0, 4.0, 4.0))
    out = tmp_path / "seg.zarr"
    args = ["-q", "segment", "--image", str(tmp_path / "raw.zarr"), "--model", str(models[1]), "--out", str(out),
            "--task", "none", *SEG]
    holder = _hold_lock_in_another_process(out)
    try:
        assert main(args) == 2
        err = _err(capsys)
        assert f"pid {holder.pid}" in err and "another napari-emseg run is writing it" in err
        assert not (out / "predictions").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind
        holder.wait()
    assert read_lock(lock_path(out))["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="napari_emseg._lock"):
        assert main(args) == 0
    assert "taking over the lock of a run that is gone" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert not lock_path(out).exists()  # released at the end
    assert zarr.open_array(str(out / "predictions"), mode="r").attrs["complete"] is True


def test_two_pretraining_runs_into_one_folder(tmp_path, raw, capsys):
    from napari_emseg.cli.pretrain import main as pretrain_main

    from .pretrain.conftest import set_args

    np.save(tmp_path / "em.npy", np.random.default_rng(1).integers(0, 255, (8, 64, 64), dtype=np.uint8))
    out = tmp_path / "run"
    args = ["-q", "--method", "mscon", "--data", str(tmp_path / "em.npy"), "--out", str(out), "--max-steps", "2",
            *set_args("mscon")]
    holder = _hold_lock_in_another_process(out)
    try:
        assert pretrain_main(args) == 2
        err = _err(capsys)
        assert f"pid {holder.pid}" in err and str(out) in err
        assert not (out / "checkpoints").exists()  # nothing interleaved
    finally:
        holder.terminate()
        holder.wait()
    assert not lock_path(out).exists()  # the holder released it on SIGTERM
    assert pretrain_main(args) == 0
    capsys.readouterr()
    assert not lock_path(out).exists()
    assert pretrain_main(args) == 2 and "already holds a training run" in _err(capsys)


def test_read_only_output_folder_fails_before_fine_tuning(tmp_path, raw, capsys, monkeypatch):
    import napari_emseg._outputs as outputs
    import napari_emseg.pretrain.trainer as trainer

    painted = np.zeros(raw.shape, np.uint32)
    painted[2, 4:20, 4:20] = 1
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "painted.npy", painted)
    folder = tmp_path / "ro"
    folder.mkdir()

    def no_write(where):
        raise PermissionError(13, "Permission denied")

    def never(*a, **k):
        raise AssertionError("training started before the output folder was checked")

    monkeypatch.setattr(outputs, "_probe_write", no_write)  # as on a read-only mount, even for root
    monkeypatch.setattr(trainer, "train", never)
    rc = main(["-q", "finetune", "--image", str(tmp_path / "raw.npy"), "--labels", str(tmp_path / "painted.npy"),
               "--task", "mitochondria", "--steps", "5", "--out", str(folder / "mito.safetensors")])
    err = _err(capsys)
    assert rc == 2 and str(folder) in err and "cannot write" in err
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_folder_for_real(tmp_path):
    from napari_emseg._outputs import UnsafeOutputError, check_output_space

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UnsafeOutputError, match="cannot write"):
            check_output_space(folder / "x.safetensors")
    finally:
        folder.chmod(0o700)


def test_too_little_free_space_is_refused_naming_the_folder(tmp_path, monkeypatch):
    import shutil

    from napari_emseg._outputs import UnsafeOutputError, check_output_space

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(UnsafeOutputError, match=rf"{tmp_path}: 1 MB free, the checkpoint needs about 10 MB"):
        check_output_space(tmp_path / "a" / "m.safetensors", 10 * 2**20, what="the checkpoint")


# ---------------------------------------------------------------------------------------------
def test_lock_is_reentrant_released_on_errors_and_refuses_a_live_holder(tmp_path):
    out = tmp_path / "x.zarr"
    with pytest.raises(RuntimeError), output_lock(out / "labels", "first"):
        with output_lock(out):  # the same thread: a command and the jobs it runs
            assert read_lock(lock_path(out))["command"] == "first"
        assert lock_path(out).exists()
        raise RuntimeError("boom")
    assert not lock_path(out).exists()
    lock_path(out).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "command": "other"}))
    with pytest.raises(LockError, match="another napari-emseg run is writing it.*other"):
        with output_lock(out):
            pass
    assert read_lock(lock_path(out))["command"] == "other"  # a live holder's lock is left alone


def test_the_widgets_ask_before_replacing_and_never_replace_foreign_files(tmp_path, monkeypatch):
    pytest.importorskip("napari")
    from napari_emseg._qt import _confirm

    asked = []
    monkeypatch.setattr(_confirm, "ask_replace", lambda parent, path: asked.append(path) or False)
    assert _confirm.may_write(None, tmp_path / "new.zarr") and asked == []
    write_volume(tmp_path / "ours.zarr", np.zeros((2, 4, 4), np.uint8))
    assert not _confirm.may_write(None, tmp_path / "ours.zarr") and asked == [tmp_path / "ours.zarr"]
    monkeypatch.setattr(_confirm, "ask_replace", lambda parent, path: True)
    assert _confirm.may_write(None, tmp_path / "ours.zarr")
    (tmp_path / "theirs.csv").write_text("x\n")
    assert not _confirm.may_write(None, tmp_path / "theirs.csv")

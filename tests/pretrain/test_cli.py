"""``napari-emseg-pretrain`` end to end: every method, export for the picker, bad input, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_emseg.cli.pretrain import main
from napari_emseg.models.checkpoint import load_checkpoint, load_model
from napari_emseg.models.registry import list_encoders
from napari_emseg.pretrain.methods import pretrain
from napari_emseg.pretrain.state import latest_checkpoint
from napari_emseg.progress import CancelToken, cancellable, drain

from .conftest import set_args, tiny_job


def run_cli(*argv: str) -> int:
    return main(["-q", *argv])


@pytest.mark.parametrize("method", ["mae3d", "mscon", "retina", "masked2d"])
def test_each_method_trains_and_exports_an_encoder(method, em_npy, tmp_path, capsys):
    out = tmp_path / method
    code = run_cli("--method", method, "--data", em_npy, em_npy, "--out", str(out), "--max-steps", "3",
                   "--name", f"tiny-{method}", "--card", "licence=test data", *set_args(method))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and np.isfinite(summary["final_metrics"]["loss"])
    ckpt = load_checkpoint(out / f"tiny-{method}.safetensors", tensors=False)
    assert ckpt.card["steps"] == 3 and ckpt.card["licence"] == "test data"
    assert ckpt.card["command"].startswith("napari-emseg-pretrain -q --method " + method)
    assert ckpt.card["final_loss"] == pytest.approx(summary["final_metrics"]["loss"])
    model = load_model(ckpt.path)
    assert model.config.arch == {"mae3d": "vit3d", "mscon": "resunet", "retina": "transunet2d",
                                 "masked2d": "unet2d"}[method]
    (entry,) = list_encoders(bundled=out, local=tmp_path / "none", include_scratch=False)
    assert entry.name == f"tiny-{method}" and entry.pretrained and entry.licence == "test data"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002.pt", "step_0000003.pt"]


def test_dry_run_prints_the_resolved_config(em_npy, capsys):
    assert run_cli("--method", "mae3d", "--dry-run", "--max-steps", "7", "--set", "model.mask_ratio=0.75",
                   "--set", "data.patch=6,96,96", "--data", em_npy) == 0
    text = capsys.readouterr().out
    cfg = json.loads(text[: text.index("# data")])
    assert cfg["train"]["max_steps"] == 7 and cfg["model"]["mask_ratio"] == 0.75
    assert cfg["train"]["betas"] == [0.9, 0.95] and cfg["model"]["decoder_width"] == 512
    assert "em.npy: (12, 96, 96)" in text


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "nope.npy: no such file"),
        ("constant", "const.npy: every sampled voxel"),
        ("nan", "nan.npy has 4096 NaN voxels"),
        ("big_patch", "em.npy: volume (12, 96, 96) (z, y, x) is smaller than the patch (16, 32, 32)"),
        ("bad_multiple", "data.patch (2, 40, 40) must be a multiple of (1, 16, 16)"),
        ("bad_field", "has no field 'nonsense'"),
    ],
)
def test_bad_input_fails_before_training_naming_it(case, message, em_npy, tmp_path, capsys):
    data, extra = [em_npy], []
    if case == "missing":
        data = [em_npy, str(tmp_path / "nope.npy")]
    elif case == "constant":
        np.save(tmp_path / "const.npy", np.full((8, 64, 64), 3, np.uint8))
        data = [em_npy, str(tmp_path / "const.npy")]
    elif case == "nan":
        arr = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
        arr[2:4] = np.nan
        np.save(tmp_path / "nan.npy", arr)
        data = [str(tmp_path / "nan.npy")]
    elif case == "big_patch":
        extra = ["--set", "data.patch=16,32,32"]
    elif case == "bad_multiple":
        extra = ["--set", "data.patch=2,40,40"]
    elif case == "bad_field":
        extra = ["--set", "model.nonsense=1"]
    out = tmp_path / "run"
    code = run_cli("--method", "mae3d", "--data", *data, "--out", str(out), "--max-steps", "2",
                   *set_args("mae3d"), *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (out / "checkpoints").exists()


def test_resume_dir_of_another_method_or_an_existing_run_is_refused(em_npy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--method", "retina", "--data", em_npy, "--out", str(out), "--max-steps", "2",
                   *set_args("retina")) == 0
    capsys.readouterr()
    code = run_cli("--method", "mae3d", "--data", em_npy, "--out", str(out), "--max-steps", "4", "--resume",
                   *set_args("mae3d"))
    assert code == 2 and "step_0000002.pt: was written by a 'pretrain-retina' run" in capsys.readouterr().err
    code = run_cli("--method", "retina", "--data", em_npy, "--out", str(out), "--max-steps", "4",
                   *set_args("retina"))
    assert code == 2 and "already holds a training run; pass --resume" in capsys.readouterr().err


def test_pretrain_resumes_exactly(em_npy, tmp_path):
    job = tiny_job("mae3d", "train.max_steps=6", "train.checkpoint_every=100")
    straight = drain(pretrain(job, [em_npy], tmp_path / "a", name="enc"), show=False)
    token = CancelToken()

    def stop_at_3(event):
        if event.step == 3:
            token.cancel()

    part = drain(cancellable(pretrain(job, [em_npy], tmp_path / "b", name="enc"), token), show=False,
                 callback=stop_at_3)
    assert (part.train.stopped, part.train.step) == ("cancelled", 3)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints")[1]["step"] == 3  # kept on cancel
    resumed = drain(pretrain(job, [em_npy], tmp_path / "b", resume=True, name="enc"), show=False)
    assert resumed.train.step == 6
    a = load_checkpoint(straight.encoder).tensors
    b = load_checkpoint(resumed.encoder).tensors
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_two_process_ddp_on_cpu_through_the_same_entry_point(em_npy, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "napari_emseg.cli.pretrain", "-q", "--method", "mae3d", "--data", em_npy, "--out", str(out),
           "--max-steps", "3", "--set", "train.device=cpu", *set_args("mae3d")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # printed by rank 0 only
    assert summary["steps"] == 3 and np.isfinite(summary["final_metrics"]["loss"])
    path, state = latest_checkpoint(out / "checkpoints")
    assert state["step"] == 3 and len(state["rng"]) == 2  # every rank's RNG state, written by rank 0
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert [p.suffix for p in out.glob("*.safetensors")] == [".safetensors"]

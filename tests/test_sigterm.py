"""SIGTERM (``timeout``, SLURM, ``docker stop``) stops training as Ctrl-C does: the state is saved.

The subprocess tests run the real console commands on tiny models, wait until training is
under way, send SIGTERM and check what is left on disk: a valid checkpoint that a resumed run
continues from exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_emseg._signals import deferred_sigterm, sigterm_as_interrupt, sigterm_pending

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")

# a constant schedule: the cosine one depends on train.max_steps, which differs between the runs
TINY_MSCON = ["model.backbone.widths=4,8,16", "model.embed_dim=16", "model.cross_grid=1,2,2",
              "model.sim_pool=1,4,4", "model.sim_hidden=16", "data.patch=2,16,16", "data.batch_size=2",
              "train.log_every=1", "train.checkpoint_every=1000000", "train.tensorboard=false",
              "train.preview_every=0", "train.warmup_fraction=0", "train.schedule=constant"]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


# -- the handler itself --------------------------------------------------------------------------
def test_sigterm_raises_keyboard_interrupt_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs between bytecodes; never reached
    assert signal.getsignal(signal.SIGTERM) is before


def test_deferred_sigterm_waits_for_the_block_to_end():
    done = []
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        with deferred_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # give the handler a chance to run: it must not raise here
                time.sleep(0.01)
            assert sigterm_pending()
            done.append("update finished")
    assert done == ["update finished"] and not sigterm_pending()


# -- real runs -----------------------------------------------------------------------------------
def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _terminate_after(proc: subprocess.Popen, marker: str, timeout: float = 300) -> tuple[int, str, str]:
    """Wait for ``marker`` in the process's log (stderr), send SIGTERM, return (rc, stdout, stderr)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=timeout)
            return proc.returncode, out, "".join(seen) + err
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"{marker!r} never appeared (rc {proc.returncode}):\n{''.join(seen)}{err}\n{out}")


@pytest.fixture(scope="module")
def em_volume(tmp_path_factory):
    from napari_emseg.data.synthetic import make_synthetic_em

    em = make_synthetic_em(shape=(12, 96, 96), seed=7)
    folder = tmp_path_factory.mktemp("sigterm")
    np.save(folder / "em.npy", em.raw)
    labels = np.zeros(em.raw.shape, np.uint32)
    for z in (3, 8):
        labels[z] = em.mitochondria[z]  # two completely painted slices (0 there is background)
    assert labels[3].any() and labels[8].any()
    np.save(folder / "painted.npy", labels)
    return folder


def test_sigterm_during_pretraining_saves_and_resume_continues_exactly(em_volume, tmp_path):
    from napari_emseg.cli.pretrain import main
    from napari_emseg.models import load_model
    from napari_emseg.pretrain.state import latest_checkpoint

    data = str(em_volume / "em.npy")
    run = tmp_path / "run"
    proc = _start(["-m", "napari_emseg.cli.pretrain", "--method", "mscon", "--data", data, "--out", str(run),
                   "--max-steps", "100000", "--threads", "1", *_sets(TINY_MSCON)], tmp_path)
    rc, out, err = _terminate_after(proc, "pretrain mscon step 3 ")
    assert rc == 130, err
    summary = json.loads(out)
    assert summary["stopped"] == "cancelled" and summary["steps"] >= 3
    path, state = latest_checkpoint(run / "checkpoints")
    step = int(state["step"])
    assert step == summary["steps"] and path.name == f"step_{step:07d}.pt"
    load_model(run / "mscon-resunet.safetensors")  # the encoder was exported, and loads

    torch.set_num_threads(1)
    target = step + 2
    assert main(["-q", "--method", "mscon", "--data", data, "--out", str(run), "--resume",
                 "--max-steps", str(target), "--threads", "1", *_sets(TINY_MSCON)]) == 0
    _, resumed = latest_checkpoint(run / "checkpoints")
    assert int(resumed["step"]) == target
    # the same run without the interruption ends with the same weights
    assert main(["-q", "--method", "mscon", "--data", data, "--out", str(tmp_path / "straight"),
                 "--max-steps", str(target), "--threads", "1", *_sets(TINY_MSCON)]) == 0
    _, straight = latest_checkpoint(tmp_path / "straight" / "checkpoints")
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_sigterm_during_fine_tuning_saves_the_model(em_volume, tmp_path):
    from napari_emseg.models import load_checkpoint, load_model

    out = tmp_path / "mito.safetensors"
    proc = _start(["-m", "napari_emseg.cli.main", "finetune", "--image", str(em_volume / "em.npy"),
                   "--labels", str(em_volume / "painted.npy"), "--task", "mitochondria", "--out", str(out),
                   "--steps", "100000", "--patch", "4,32,32", "--encoder", "scratch-resunet",
                   "--set", "batch_size=1", "--set", "holdout=false", "--set", "device=cpu"], tmp_path)
    rc, stdout, err = _terminate_after(proc, "fine-tune step 25 ")  # logged every 25 steps
    assert rc == 130, err
    assert "(cancelled)" in stdout
    ckpt = load_checkpoint(out, tensors=False)
    assert ckpt.card["stopped"] == "cancelled" and ckpt.card["steps"] >= 25
    load_model(out)

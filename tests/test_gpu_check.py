"""scripts/gpu_check.sh in its CPU mode: every stage runs tiny and writes what it measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_script(*args: str, budget: int = 900, **env_vars: str) -> subprocess.CompletedProcess:
    # the running interpreter (its torch, this checkout's source); a generous budget on a loaded CI box
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": str(budget), **env_vars}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=budget + 60)


@pytest.mark.slow
def test_cpu_mode_runs_every_stage_and_writes_its_figures(tmp_path):
    from napari_emseg.models import load_checkpoint

    out = tmp_path / "gpu-check"
    proc = run_script("--cpu", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu"
    assert set(summary["stages"]) >= {"env", "gpu_tests", "unetr", "mae3d_mfu", "pretrain", "live", "devices"}
    bad = {k: v for k, v in summary["stages"].items() if v["status"] != "ok"}
    assert not bad, (bad, {k: (out / f"{k}.log").read_text()[-1500:] for k in bad if (out / f"{k}.log").exists()})
    assert summary["all_ok"] and summary["env"]["torch"] and summary["env"]["cuda_available"] is False
    # the GPU tests were collected (and skipped without CUDA)
    assert summary["gpu_tests"]["tests"] >= 1 and summary["gpu_tests"]["failures"] == 0
    unetr = json.loads((out / "unetr.json").read_text())["unetr"]
    assert unetr["mvoxel_per_s"] > 0 and unetr["kflop_per_voxel"] > 0 and unetr["fraction_of_peak"] is None
    # and end to end, zarr volume -> zarr predictions, as `segment --task none`
    assert unetr["zarr"]["mvoxel_per_s"] > 0 and unetr["zarr"]["output"].startswith("(3, 8, 64, 64)")
    mfu = json.loads((out / "mae3d_mfu.json").read_text())["mae3d"]
    assert mfu["samples_per_s"] > 0 and mfu["tflop_per_step"] > 0 and mfu["mfu"] is None
    # the short pretraining run's encoder and its card
    card = json.loads((out / "mae3d-vitmicro-cpu-check.card.json").read_text())
    assert card["steps"] == 2 and card["hardware"] == "CPU" and card["method"].startswith("MAE-3D")
    ckpt = load_checkpoint(out / "mae3d-vitmicro-cpu-check.safetensors", tensors=False)
    assert ckpt.config.arch == "vit3d" and ckpt.config.vit_size == "micro"
    assert summary["pretrain_run"]["steps"] == 2
    # segment --devices cpu,cpu: two workers, each on its device, the maps of one device (float16 rounding)
    devices = json.loads((out / "devices.json").read_text())
    assert devices["ok"] and devices["max_abs_diff"] <= 1e-3 and devices["workers"] == {"0": "cpu", "1": "cpu"}
    # live painting on the synthetic volume: every stroke, its overlay time when one showed, steps/s
    live = json.loads((out / "live.json").read_text())
    # (on a loaded CI box a step may take the whole run: then no rate, and no overlay to time)
    assert live["device"] == "cpu" and live["data"].startswith("synthetic EM") and live["steps"] >= 1
    assert [x["z"] for x in live["latencies"]] == live["sections"] and len(set(live["sections"])) == 3
    assert live["steps_per_s"] is None or live["steps_per_s"] > 0
    assert summary["live"]["steps"] == live["steps"] and summary["live"]["median_overlay_s"] == live["median_overlay_s"]
    md = (out / "summary.md").read_text()
    assert "| pretrain | ok |" in md and "Mvoxel/s" in md and "samples/s" in md
    assert "| live | ok |" in md and "zarr -> zarr" in md and "stroke -> overlay" in md
    for name in ("env.log", "gpu_tests.log", "unetr.log", "mae3d_mfu.log", "pretrain.log", "live.log", "gpu_tests.xml"):
        assert (out / name).is_file(), name


def test_a_failing_stage_is_recorded_and_the_rest_still_run(tmp_path):
    """No time left for the stages: each is recorded as skipped, and a summary is still written."""
    out = tmp_path / "gpu-check"
    proc = run_script("--cpu", str(out), budget=1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {k for k, v in summary["stages"].items() if v["status"] == "skipped"} == {
        "gpu_tests", "unetr", "mae3d_mfu", "pretrain", "live", "devices"}
    assert summary["all_ok"] is False


def test_gpu_mode_without_cuda_skips_the_gpu_stages_and_still_summarises(tmp_path):
    out = tmp_path / "gpu-check"
    proc = run_script(str(out), budget=20, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages["env"]["status"] == "failed" and "no usable CUDA" in stages["env"]["note"]
    for name in ("unetr", "mae3d_mfu", "pretrain", "live", "devices"):
        assert stages[name]["status"] == "skipped" and stages[name]["note"] == "no CUDA device"
    assert "| env | failed |" in (out / "summary.md").read_text()


def test_usage_errors():
    assert run_script().returncode == 2
    assert run_script("--bogus", "x").returncode == 2
    assert "OUTDIR" in run_script("--help").stdout

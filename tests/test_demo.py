"""The README's main job (`napari-emseg demo`) end to end, on a tiny sample."""

from __future__ import annotations

import json

import zarr

from napari_emseg.cli.main import main
from napari_emseg.models.checkpoint import load_checkpoint
from napari_emseg.provenance import read_bundle


def test_demo_fine_tunes_segments_tunes_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["-q", "demo", "--out", str(out), "--shape", "12,64,64", "--steps", "2", "--slices", "3,8"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for task in ("mitochondria", "neurons"):
        assert {f"{task} (default thresholds)", f"{task} (calibrated on painted)"} <= set(metrics)
        assert (out / f"{task}.safetensors").is_file() and (out / f"{task}_overlay.png").is_file()
        labels = zarr.open_array(str(out / f"{task}.zarr" / "labels"), mode="r")
        assert labels.shape == (12, 64, 64)
        assert metrics[f"{task} (calibrated on painted)"]["objects"] == int(labels[:].max())
        # the labels use the calibration fine_tune stored in the checkpoint (no second tuning)
        card = load_checkpoint(out / f"{task}.safetensors", tensors=False).card
        assert labels.attrs["postprocess_source"]["source"] == "calibrated on painted slices"
        assert dict(labels.attrs)["postprocess"] == card["postprocess"]["config"]
        # the provenance bundle records the tuned settings that made these labels (rerun makes them again)
        bundle = read_bundle(out / f"{task}.zarr")
        section = "neurons" if task == "neurons" else "mitochondria"
        assert bundle["config"][section] == dict(labels.attrs)["postprocess"]
        assert bundle["results"]["n_objects"] == int(labels[:].max())
        assert bundle["postprocess_source"] == dict(labels.attrs)["postprocess_source"]
        assert bundle["input"]["path"].endswith("sample.zarr:raw")
    assert 0.0 <= metrics["neurons (calibrated on painted)"]["arand"] <= 1.0
    printed = capsys.readouterr().out
    assert "calibrated on painted" in printed and "open in napari" in printed
    # the recorded tuned settings make the same labels again
    assert main(["-q", "rerun", str(out / "mitochondria.zarr")]) == 0
    assert "labels identical:        yes" in capsys.readouterr().out

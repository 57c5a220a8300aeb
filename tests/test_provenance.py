"""Provenance bundles: every field written (JSON and zarr attributes), and a rerun is bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from napari_emseg.cli.main import main
from napari_emseg.inference import InferenceConfig
from napari_emseg.io import open_volume, write_volume
from napari_emseg.models import ModelConfig, build_model, save_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.postprocess.mitochondria import MitoConfig
from napari_emseg.progress import drain
from napari_emseg.provenance import (
    ATTR_KEY,
    PACKAGES,
    ProvenanceError,
    content_checksum,
    file_sha256,
    read_bundle,
)
from napari_emseg.rerun import rerun_job
from napari_emseg.workflows import SegmentConfig, segment_job

# thresholds inside the random network's output range, so its maps give several objects
POST = dict(seed_foreground=0.55, seed_contour=0.6, seed_distance=0.0, foreground_threshold=0.5,
            min_seed_size=2, min_size=0)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from napari_emseg.data.synthetic import make_synthetic_em

    root = tmp_path_factory.mktemp("prov")
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    ckpt = save_checkpoint(root / "mito.safetensors", net, card={"method": "test", "data": "synthetic"})
    em = make_synthetic_em((12, 64, 64), seed=7)
    write_volume(root / "raw.zarr", em.raw, voxel_size=em.voxel_size, chunks=(6, 32, 32))
    return root, ckpt, em


def test_bundle_has_every_field_in_json_and_attributes(setup, tmp_path):
    root, ckpt, em = setup
    cfg = SegmentConfig(inference=InferenceConfig(device="cpu"), mitochondria=MitoConfig(**POST))
    volume = open_volume(root / "raw.zarr")
    seg = drain(segment_job(ckpt, volume, cfg, out=tmp_path / "s.zarr", command=["napari-emseg", "test"]), show=False)
    bundle = json.loads((tmp_path / "s.zarr" / "provenance.json").read_text())
    assert bundle == seg.provenance and read_bundle(tmp_path / "s.zarr") == bundle
    assert {"format", "model", "config", "postprocess", "input", "voxel_size_match", "environment", "run",
            "results"} <= set(bundle)
    assert bundle["model"]["sha256"] == file_sha256(ckpt) and bundle["model"]["card"]["method"] == "test"
    assert len(bundle["model"]["weights_sha256"]) == 64 and bundle["model"]["info"]["target"] == "bcd"
    assert SegmentConfig.from_dict(bundle["config"]) == cfg
    inp = bundle["input"]
    assert inp["path"] == str((root / "raw.zarr").resolve()) and inp["voxel_size"] == list(em.voxel_size)
    assert inp["checksum"] == content_checksum(volume.data) and inp["checksum"]["block"] == [6, 32, 32]
    env = bundle["environment"]
    assert set(PACKAGES) <= set(env["packages"]) and env["packages"]["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["torch_threads"] == 1
    run = bundle["run"]
    assert run["wall_time_s"] > 0 and run["command"] == ["napari-emseg", "test"] and run["started"] <= run["finished"]
    assert bundle["results"]["n_objects"] == int(seg.labels.max()) >= 3
    # the same bundle in the attributes of both arrays and of the container
    for node in ("s.zarr", "s.zarr/labels", "s.zarr/predictions"):
        assert dict(zarr.open(str(tmp_path / node), mode="r").attrs)[ATTR_KEY] == bundle
    # the checksum sees every value: one changed voxel changes it
    changed = em.raw.copy()
    changed[5, 7, 9] ^= 1
    assert content_checksum(changed, block=[6, 32, 32])["digest"] != inp["checksum"]["digest"]
    left = [p.name for p in (tmp_path / "s.zarr").iterdir() if any(t in p.name for t in (".tmp-", ".partial-", ".old-"))]
    assert not left  # atomic writes leave no temporaries


def test_cli_segment_then_rerun_reproduces_labels_bit_for_bit(setup, tmp_path, capsys):
    root, ckpt, em = setup
    out = tmp_path / "seg.zarr"
    args = ["-q", "segment", "--image", str(root / "raw.zarr"), "--model", str(ckpt), "--out", str(out),
            "--device", "cpu", "--tile", "8,32,32", "--labels-format", "tif"]
    args += [a for k, v in POST.items() for a in ("--post", f"{k}={v}")]
    assert main(args) == 0
    bundle = read_bundle(out)
    assert bundle["config"]["inference"]["tile"] == [8, 32, 32] and bundle["config"]["mitochondria"]["seed_contour"] == 0.6
    assert bundle["results"]["outputs"]["labels"].endswith("labels.tif")
    capsys.readouterr()
    assert main(["-q", "rerun", str(out), "--out", str(tmp_path / "again.zarr"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "labels identical:        yes" in printed and "input content identical: yes" in printed
    first = open_volume(out / "labels.tif").data.compute()
    again = open_volume(tmp_path / "again.zarr" / "labels").data.compute()
    assert first.max() >= 3
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "again.zarr" / "predictions"))[:],
                                  zarr.open_array(str(out / "predictions"))[:])
    assert read_bundle(tmp_path / "again.zarr")["results"]["labels_checksum"] == bundle["results"]["labels_checksum"]


def test_rerun_of_an_in_memory_layer_and_a_changed_checkpoint(setup, tmp_path):
    root, ckpt, em = setup
    cfg = SegmentConfig(inference=InferenceConfig(device="cpu"), mitochondria=MitoConfig(**POST))
    # as the widget does: a numpy layer and its scale, no file
    drain(segment_job(ckpt, em.raw, cfg, out=tmp_path / "s.zarr", voxel_size=em.voxel_size, postprocess=False),
          show=False)
    assert read_bundle(tmp_path / "s.zarr")["input"]["path"] is None
    with pytest.raises(ProvenanceError, match="--image"):
        drain(rerun_job(tmp_path / "s.zarr", tmp_path / "r.zarr"), show=False)
    other = save_checkpoint(tmp_path / "other.safetensors",
                            build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1),
                                        head_info("bcd", tile=(8, 32, 32))))
    with pytest.raises(ProvenanceError, match="sha256 differs"):
        drain(rerun_job(tmp_path / "s.zarr", tmp_path / "r.zarr", model=other, image=str(root / "raw.zarr")),
              show=False)
    res = drain(rerun_job(tmp_path / "s.zarr", tmp_path / "r.zarr", model=other, image=str(root / "raw.zarr"),
                          strict=False), show=False)
    # the file holds the layer's values (hashed in other blocks, compared in the recorded ones)
    assert not res.model_identical and res.input_identical and res.labels_identical is None
    with pytest.raises(ProvenanceError, match="no provenance bundle"):
        read_bundle(root / "raw.zarr")

"""The encoder catalogue: discovery, scratch entries, downloads with checksums, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from napari_emseg.cli.main import main
from napari_emseg.models.build import ModelConfig, build_model
from napari_emseg.models.checkpoint import save_checkpoint
from napari_emseg.models.errors import DownloadError, UnknownEncoderError
from napari_emseg.models.heads import head_info
from napari_emseg.models.registry import (
    bundled_dir,
    fetch_encoder,
    get_encoder,
    list_encoders,
    model_for_encoder,
    resolve_encoder,
)

from .conftest import TINY

CARD = {"family": "ViT-3D micro", "method": "mae3d", "data": "ISBI 2012 (30 sections)", "steps": 10,
        "final_loss": 0.42, "licence": "CC-BY-NC-4.0", "command": "napari-emseg-pretrain mae3d ...",
        "training": {"batch": 4}}


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """An isolated catalogue: a bundled folder with one encoder, an empty local folder."""
    monkeypatch.setenv("NAPARI_EMSEG_CACHE", str(tmp_path / "cache"))
    bundled = tmp_path / "weights"
    enc = build_model(TINY["vit3d"], head_info("features", voxel_size=(50.0, 4.6, 4.6), tile=(6, 96, 96)))
    save_checkpoint(bundled / "mae3d-micro-test.safetensors", enc, card=CARD)
    return {"bundled": bundled, "local": tmp_path / "cache" / "encoders"}


def _download_spec(folder, src, sha, name="mirror-encoder"):
    spec = {"name": name, "url": src.resolve().as_uri(), "sha256": sha, "config": TINY["vit3d"].to_dict(),
            "card": {**CARD, "description": "test mirror"}}
    (folder / f"{name}.download.json").write_text(json.dumps(spec))


def test_bundled_checkpoints_are_discovered_with_their_card(dirs):
    entries = list_encoders(**dirs)
    bundled = [e for e in entries if e.source == "bundled"]
    assert [e.name for e in bundled] == ["mae3d-micro-test"]
    e = bundled[0]
    assert e.pretrained and e.method == "mae3d" and e.data.startswith("ISBI") and e.licence == "CC-BY-NC-4.0"
    assert e.patch_size == (1, 16, 16) and e.voxel_size == (50.0, 4.6, 4.6) and e.tile == (6, 96, 96)
    assert e.params == sum(p.numel() for p in build_model(TINY["vit3d"]).parameters())
    assert e.card["final_loss"] == 0.42


def test_neighbouring_card_completes_the_entry(dirs):
    (dirs["bundled"] / "mae3d-micro-test.card.json").write_text(json.dumps({"licence": "CC0-1.0"}))
    assert get_encoder("mae3d-micro-test", **dirs).licence == "CC0-1.0"


def test_scratch_entries_are_never_pretrained(dirs):
    scratch = [e for e in list_encoders(**dirs) if e.source == "scratch"]
    assert {e.config.arch for e in scratch} == {"unetr", "resunet", "resunet2d", "unet2d", "transunet2d"}
    assert all(not e.pretrained and e.method.startswith("none") and e.location == "" for e in scratch)
    cfg = resolve_encoder("scratch-resunet")
    assert isinstance(cfg, ModelConfig) and cfg.arch == "resunet"
    base = get_encoder("scratch-vit3d-base", **dirs)
    assert 80e6 < base.params < 90e6  # ViT-B encoder, counted without allocating it


def test_unreadable_files_are_skipped(dirs, caplog):
    (dirs["bundled"] / "broken.safetensors").write_bytes(b"garbage")
    names = [e.name for e in list_encoders(**dirs)]
    assert "broken" not in names and "mae3d-micro-test" in names
    assert "broken.safetensors" in caplog.text


def test_local_folder_and_paths(dirs, tmp_path):
    dirs["local"].mkdir(parents=True)
    net = build_model(TINY["resunet"].replace(use_skips=False), head_info("reconstruction"))
    mine = save_checkpoint(dirs["local"] / "my-mscon.safetensors", net, card={"method": "mscon"})
    local = list_encoders()  # default folders: the local one comes from NAPARI_EMSEG_CACHE
    entry = next(e for e in local if e.name == "my-mscon")
    assert entry.source == "local" and entry.method == "mscon" and entry.patch_size is None
    assert entry.params == sum(p.numel() for p in net.encoder.parameters())
    assert resolve_encoder(mine) == mine  # a path is used as it is
    with pytest.raises(UnknownEncoderError, match="neither a file nor an encoder"):
        resolve_encoder(tmp_path / "nope.safetensors")


def test_download_from_file_url_with_checksum(dirs, tmp_path):
    src = dirs["bundled"] / "mae3d-micro-test.safetensors"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _download_spec(dirs["bundled"], src, hashlib.sha256(src.read_bytes()).hexdigest())
    entry = get_encoder("mirror-encoder", **dirs)
    assert entry.source == "download" and entry.location.startswith("file://") and entry.pretrained
    assert entry.params == get_encoder("mae3d-micro-test", **dirs).params
    path = fetch_encoder(entry)
    assert path.is_file() and path.read_bytes() == src.read_bytes()
    assert str(path).startswith(str(tmp_path / "cache"))  # NAPARI_EMSEG_CACHE decides where
    assert fetch_encoder(entry) == path  # cached


def test_checksum_mismatch_is_a_clear_error(dirs, tmp_path):
    src = dirs["bundled"] / "mae3d-micro-test.safetensors"
    _download_spec(dirs["bundled"], src, "0" * 64, name="tampered")
    with pytest.raises(DownloadError, match="tampered.*does not match its published checksum"):
        fetch_encoder(get_encoder("tampered", **dirs))
    assert not list((tmp_path / "cache").rglob("tampered*"))  # nothing bad left in the cache


def test_model_for_encoder_transplants(dirs, monkeypatch):
    monkeypatch.setattr("napari_emseg.models.registry.bundled_dir", lambda: dirs["bundled"])
    model, report = model_for_encoder("mae3d-micro-test", head_info("affinities"))
    assert model.config.arch == "unetr" and model.config.vit_size == "micro"
    assert report is not None and not report.missing and len(report.loaded) > 10
    model, report = model_for_encoder("scratch-vit3d-micro", head_info("bcd"), feature_size=8)
    assert report is None and model.config.feature_size == 8 and model.info.target == "bcd"
    assert model(torch.randn(1, 1, 1, 16, 16)).shape == (1, 3, 1, 16, 16)


def test_cli_lists_the_catalogue_as_json(dirs, monkeypatch, capsys):
    monkeypatch.setattr("napari_emseg.models.registry.bundled_dir", lambda: dirs["bundled"])
    assert main(["encoders", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    by_name = {e["name"]: e for e in entries}
    assert by_name["mae3d-micro-test"]["source"] == "bundled" and by_name["mae3d-micro-test"]["pretrained"]
    assert by_name["scratch-resunet"]["pretrained"] is False
    assert main(["encoders"]) == 0
    table = capsys.readouterr().out
    assert "mae3d-micro-test" in table and "scratch-transunet2d" in table
    assert main(["encoders", "--fetch", "no-such-encoder"]) == 2
    assert "no encoder called" in capsys.readouterr().err


def test_packaged_weights_folder_lists_cleanly():
    """Whatever the package ships must be readable and fully described."""
    assert bundled_dir().name == "weights"
    for e in list_encoders(include_scratch=False):
        if e.source == "bundled":
            assert e.method not in ("", "unknown") and e.data not in ("", "unknown"), e.name
            assert e.licence not in ("", "unknown") and e.params > 0, e.name


def test_auto_picks_the_task_model_only_when_it_is_a_2d_network(dirs, monkeypatch):
    from napari_emseg.models.registry import default_encoder

    monkeypatch.setattr("napari_emseg.models.registry.bundled_dir", lambda: dirs["bundled"])
    assert default_encoder(2, "mitochondria") == "scratch-unet2d"  # no task model bundled
    assert default_encoder(2) == "scratch-unet2d" and default_encoder(3) == "scratch-resunet"
    mito = build_model(ModelConfig(arch="unet2d", widths=(4, 8, 8, 8, 8)), head_info("bcd", task="mitochondria"))
    save_checkpoint(dirs["bundled"] / "emseg-mito-vnc.safetensors", mito, card={"family": "unet2d"})
    assert default_encoder(2, "mitochondria") == "emseg-mito-vnc"
    assert default_encoder(2, "neurons") == "scratch-unet2d"
    assert default_encoder(3, "mitochondria") == "scratch-resunet"  # a 2D model is no 3D starting point
    resunet = build_model(TINY["resunet"], head_info("boundaries"))
    save_checkpoint(dirs["bundled"] / "emseg-boundaries-em.safetensors", resunet, card={"family": "resunet"})
    assert default_encoder(2, "neurons") == "scratch-unet2d"  # a 3D task model is skipped for 2D data


def test_auto_starts_other_2d_tasks_from_the_masked2d_unet(dirs, monkeypatch):
    """Semantic 2D, and mitochondria or neurons without their task model, start from the
    U-Net pretrained by masked inpainting when the catalogue holds it; the task model still
    comes first."""
    from napari_emseg.models.registry import MASKED2D, default_encoder

    monkeypatch.setattr("napari_emseg.models.registry.bundled_dir", lambda: dirs["bundled"])
    unet = build_model(ModelConfig(arch="unet2d", widths=(4, 8, 8, 8, 8)), head_info("reconstruction"))
    save_checkpoint(dirs["bundled"] / f"{MASKED2D}.safetensors", unet, card={"family": "unet2d"})
    assert default_encoder(2) == default_encoder(2, "semantic") == MASKED2D
    assert default_encoder(2, "mitochondria") == default_encoder(2, "neurons") == MASKED2D
    assert default_encoder(3) == "scratch-resunet"  # a 2D network is no 3D starting point
    mito = build_model(ModelConfig(arch="unet2d", widths=(4, 8, 8, 8, 8)), head_info("bcd", task="mitochondria"))
    save_checkpoint(dirs["bundled"] / "emseg-mito-vnc.safetensors", mito, card={"family": "unet2d"})
    assert default_encoder(2, "mitochondria") == "emseg-mito-vnc"
    model, report = model_for_encoder(MASKED2D, head_info("semantic", task="semantic", n_classes=3))
    assert report is not None and model.info.out_channels == 3
    assert [k for k in report.missing if not k.startswith("net.final_conv.")] == []  # all but the head


def test_the_bundled_masked2d_unet_is_the_semantic_2d_default():
    """The package ships the pretrained U-Net, described, and ``auto`` uses it for semantic 2D."""
    from napari_emseg.models.registry import MASKED2D, default_encoder

    entry = get_encoder(MASKED2D)
    assert entry.source == "bundled" and entry.config.arch == "unet2d"
    assert "ISBI" in entry.data and "Non-commercial" in entry.licence
    assert default_encoder(2, "semantic") == MASKED2D

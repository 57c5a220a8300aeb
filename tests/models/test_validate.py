"""A checkpoint's header is checked against its model on the meta device before anything is built."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from napari_emseg.models import ModelConfig, build_model, head_info, load_model, save_checkpoint
from napari_emseg.models.checkpoint import load_checkpoint
from napari_emseg.models.errors import CorruptCheckpointError
from napari_emseg.models.validate import check_header


@pytest.fixture
def small(tmp_path):
    net = build_model(ModelConfig(arch="resunet", widths=(2, 4), subunits=1), head_info("bcd", tile=(4, 16, 16)))
    return save_checkpoint(tmp_path / "small.safetensors", net)


def forge(src, dst, **config_changes):
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    cfg.update(config_changes)
    meta["config"] = json.dumps(cfg)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_a_tiny_file_describing_a_huge_model_is_refused_without_allocating(small, tmp_path, capsys):
    path = forge(small, tmp_path / "huge.safetensors", widths=[65536, 131072, 262144, 524288])
    assert path.stat().st_size < 8000  # a few KB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    with pytest.raises(CorruptCheckpointError, match=r"huge.safetensors: its metadata describes a resunet of .* "
                                                     r"parameters.*refused before allocating"):
        load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 500_000  # < 0.5 GB more, not > 100 GB
    # header-only reading (catalogues) still works; a header-only Checkpoint is checked when loaded
    ckpt = load_checkpoint(path, tensors=False)
    with pytest.raises(CorruptCheckpointError):
        load_model(ckpt)
    # and the CLI says it in one line
    from napari_emseg.cli.main import main

    np.save(tmp_path / "raw.npy", np.zeros((4, 32, 32), np.uint8))
    assert main(["-q", "segment", "--image", str(tmp_path / "raw.npy"), "--model", str(path),
                 "--out", str(tmp_path / "seg.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused before allocating" in err, err


def test_weights_of_another_shape_or_name_are_refused_before_building(small, tmp_path):
    path = forge(small, tmp_path / "wide.safetensors", widths=[2, 8])  # the file holds widths 2, 4
    with pytest.raises(CorruptCheckpointError, match="do not fit its own config.*of another shape"):
        load_model(path)
    with pytest.raises(CorruptCheckpointError, match="implausible model config"):
        load_model(forge(small, tmp_path / "deep.safetensors", widths=[2] * 500))


def test_a_header_describing_more_bytes_than_the_file_is_refused(small):
    ckpt = load_checkpoint(small, tensors=False)
    with pytest.raises(CorruptCheckpointError, match="header describes .* the file holds"):
        check_header(small, ckpt.config, ckpt.info, shapes={"w": ((10**7,), "F32")})


def test_good_checkpoints_still_load(small):
    model = load_model(small)
    assert model.config.widths == (2, 4)
    assert load_model(load_checkpoint(small, tensors=False)).config.widths == (2, 4)

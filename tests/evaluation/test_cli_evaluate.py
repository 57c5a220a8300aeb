"""`napari-emseg evaluate`: table and JSON output, errors as one line with exit status 2."""

from __future__ import annotations

import json

import numpy as np

from napari_emseg.cli.main import main
from napari_emseg.io import write_volume


def test_evaluate_neurons_json_and_table(tmp_path, tiny_em, capsys):
    store = tmp_path / "x.zarr"
    write_volume(store / "gt", tiny_em.neurons)
    pred = tiny_em.neurons.copy()
    pred[pred == 2] = 3  # one merge
    write_volume(store / "pred", pred)
    assert main(["evaluate", "--pred", f"{store}:pred", "--gt", f"{store}:gt", "--task", "neurons", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["voi_merge"] > 0 and out["voi_split"] < 1e-9 and 0 < out["arand"] < 1
    assert main(["evaluate", "--pred", f"{store}:pred", "--gt", f"{store}:gt", "--task", "neurons"]) == 0
    table = capsys.readouterr().out
    assert "voi_split" in table and "arand" in table


def test_evaluate_mitochondria_keys_and_errors(tmp_path, tiny_em, capsys):
    store = tmp_path / "m.zarr"
    write_volume(store / "gt", tiny_em.mitochondria)
    write_volume(store / "small", tiny_em.mitochondria[:, :50])
    args = ["evaluate", "--pred", f"{store}:gt", "--gt", f"{store}:gt", "--task", "mitochondria", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("ap50", "ap75", "ap75_small", "ap75_medium", "ap75_large", "iou"):
        assert key in out
    assert out["ap75"] == 1.0 and out["ap75_large"] is None  # no large object: null, not NaN
    assert main(["evaluate", "--pred", f"{store}:small", "--gt", f"{store}:gt", "--task", "mitochondria"]) == 2
    assert "same region" in capsys.readouterr().err
    semantic = ["evaluate", "--pred", f"{store}:gt", "--gt", f"{store}:gt", "--task", "semantic"]
    assert np.unique(tiny_em.mitochondria).size > 2 and main(semantic) == 0

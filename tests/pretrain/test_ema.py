"""The weights' moving average: its arithmetic, the trainer keeping it, fine_tune saving it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_emseg.config import ConfigError
from napari_emseg.pretrain import trainer as T
from napari_emseg.pretrain.ema import WeightAverage
from napari_emseg.progress import drain


def test_average_follows_the_warm_up_decay_and_copies_integer_buffers():
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(0.0)
    avg = WeightAverage(net, decay=0.9)
    expect = 0.0
    for n, w in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        with torch.no_grad():
            net[0].weight.fill_(w)
        net[1].num_batches_tracked += 1
        avg.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        expect = d * expect + (1 - d) * w
        torch.testing.assert_close(avg.module[0].weight, torch.full((1, 2), expect))
    assert int(avg.module[1].num_batches_tracked) == 4  # counted, not averaged
    assert not any(p.requires_grad for p in avg.module.parameters())
    with pytest.raises(ConfigError, match="between 0 and 1"):
        WeightAverage(net, decay=1.0)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def forward(self, batch):
        loss = ((self.net(batch["x"]) - batch["y"]) ** 2).mean()
        return loss, {}


def stream(start: int):
    i = start
    while True:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(8, 4, generator=g)
        yield {"x": x, "y": x.sum(1, keepdim=True)}
        i += 1


def test_trainer_keeps_validates_and_resumes_the_average(tmp_path):
    cfg = T.TrainConfig(lr=0.05, max_steps=12, schedule="constant", log_every=4, tensorboard=False,
                        checkpoint_every=6, ema_decay=0.8, validate_every=6, early_stop_metric="w")
    torch.manual_seed(0)
    seen = []

    def validate(model, step):
        seen.append(model)
        return {"w": float(model.net.weight.sum())}

    res = drain(T.train(Toy(), stream, cfg, tmp_path / "a", validate=validate), show=False)
    last = res.model.state_dict()
    assert set(res.ema_state) == set(last)
    assert not torch.allclose(res.ema_state["net.weight"], last["net.weight"])  # an average, not the last step
    assert all(m is not res.model for m in seen)  # validation scored the average
    torch.testing.assert_close(res.best_state["net.weight"].sum(), torch.tensor(res.best_metric))
    # a run cut at step 6 and resumed ends with the same average as the straight one
    torch.manual_seed(0)
    drain(T.train(Toy(), stream, cfg.replace(max_steps=6), tmp_path / "b"), show=False)
    resumed = drain(T.train(Toy(), stream, cfg, tmp_path / "b", resume=True, validate=validate), show=False)
    torch.testing.assert_close(resumed.ema_state["net.weight"], res.ema_state["net.weight"])
    torch.manual_seed(0)
    plain = drain(T.train(Toy(), stream, cfg.replace(ema_decay=None), None), show=False)
    assert plain.ema_state is None


def test_fine_tune_saves_the_average(tiny_em, tmp_path, monkeypatch):
    from napari_emseg.finetune.job import FineTuneConfig, fine_tune
    from napari_emseg.models import load_model

    torch.set_num_threads(1)
    lab = np.zeros_like(tiny_em.mitochondria)
    lab[[3, 8]] = tiny_em.mitochondria[[3, 8]]
    raw = {}
    orig = T.train

    def spy(*args, **kw):  # the last step's weights, before fine_tune swaps in the average
        res = yield from orig(*args, **kw)
        raw.update({k[len("model."):]: v.clone() for k, v in res.model.state_dict().items()})
        return res

    monkeypatch.setattr(T, "train", spy)
    cfg = FineTuneConfig(task="mitochondria", steps=6, patch=(4, 32, 32), batch_size=2, calibrate=False,
                         ema=0.5, dims="3d")
    res = drain(fine_tune("scratch-resunet", tiny_em.raw, lab, cfg, out=tmp_path / "m.safetensors"), show=False)
    saved = load_model(res.checkpoint).state_dict()
    moved = [k for k, v in saved.items() if v.is_floating_point() and not torch.equal(v, raw[k])]
    assert moved, "the checkpoint holds the last step's weights, not their average"
    from napari_emseg.models.checkpoint import load_checkpoint

    card = load_checkpoint(res.checkpoint, tensors=False).card
    assert card["weights"] == {"step": 6, "moving_average": 0.5}

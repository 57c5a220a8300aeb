"""The shared training loop: exact resume, safe checkpoints, cancellation, validation hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_emseg.pretrain.state import (
    latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
)
from napari_emseg.pretrain.trainer import TrainConfig, TrainingError, lr_factor, train
from napari_emseg.progress import CancelToken, cancellable, drain


class Toy(nn.Module):
    """A regression objective that also consumes the global RNG (like masking does)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.calls, self.fail_at = 0, fail_at

    def forward(self, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
        loss = ((self.net(x) - batch["y"]) ** 2).mean()
        return loss, {"mse": loss.detach()}


def stream(start: int):
    i = start
    while True:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, 8, generator=g)
        yield {"x": x, "y": x.sum(1, keepdim=True)}
        i += 1


CFG = TrainConfig(optimizer="adamw", lr=1e-2, max_steps=10, warmup_fraction=0.2, checkpoint_every=3,
                  log_every=2, keep_last=2, weight_decay=0.01, tensorboard=False)


def toy(seed: int = 0, **kw) -> Toy:
    torch.manual_seed(seed)
    return Toy(**kw)


def cancel_at(step: int):
    token = CancelToken()

    def callback(event):
        if event.step == step:
            token.cancel()

    return token, callback


def test_schedule_warms_up_then_decays():
    f = [lr_factor(s, CFG) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[1:], f[2:])) and f[-1] < 0.05


def test_ten_steps_equal_five_plus_resumed_five(tmp_path):
    straight = drain(train(toy(), stream, CFG, tmp_path / "a", meta={"kind": "toy"}), show=False)
    token, cb = cancel_at(5)
    first = drain(cancellable(train(toy(), stream, CFG, tmp_path / "b", meta={"kind": "toy"}), token),
                  show=False, callback=cb)
    assert (first.stopped, first.step) == ("cancelled", 5)
    resumed_model = toy(seed=123)  # different init: everything must come from the checkpoint
    resumed = drain(train(resumed_model, stream, CFG, tmp_path / "b", resume=True, meta={"kind": "toy"}),
                    show=False)
    assert (resumed.stopped, resumed.step) == ("max_steps", 10)
    for p, q in zip(straight.model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert resumed.metrics["loss"] == pytest.approx(straight.metrics["loss"], rel=1e-6)
    assert [s for s, _ in list_checkpoints(tmp_path / "b" / "checkpoints")] == [9, 10]  # keep_last=2


def test_cancel_saves_and_keeps_earlier_checkpoints(tmp_path):
    token, cb = cancel_at(4)
    res = drain(cancellable(train(toy(), stream, CFG, tmp_path), token), show=False, callback=cb)
    steps = [s for s, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert res.stopped == "cancelled" and steps == [3, 4]
    state = load_training_checkpoint(res.checkpoint)
    assert state["step"] == 4
    torch.testing.assert_close(state["model"]["net.0.weight"], res.model.net[0].weight.detach())


def test_keyboard_interrupt_at_a_yield_is_a_cancel(tmp_path):
    job = train(toy(), stream, CFG, tmp_path)
    for _ in range(2):
        next(job)
    with pytest.raises(StopIteration) as stop:
        job.throw(KeyboardInterrupt())
    assert stop.value.value.stopped == "cancelled" and stop.value.value.step == 2
    assert latest_checkpoint(tmp_path / "checkpoints")[1]["step"] == 2


def test_a_crash_leaves_the_last_good_checkpoint(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        drain(train(toy(fail_at=8), stream, CFG, tmp_path), show=False)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step_0000003.pt", "step_0000006.pt"]  # no temporaries left behind
    assert latest_checkpoint(tmp_path / "checkpoints")[1]["step"] == 6


def test_nan_loss_is_an_error_that_names_the_step():
    class Bad(Toy):
        def forward(self, batch):
            loss, m = super().forward(batch)
            return loss * float("nan"), m

    with pytest.raises(TrainingError, match="step 1"):
        drain(train(Bad(), stream, CFG), show=False)


def test_validation_early_stopping_keeps_the_best_state(tmp_path):
    scores = iter([0.5, 0.3, 0.4, 0.45, 0.6, 0.7])
    seen = []

    def validate(model, step):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(step)
        return {"val_loss": next(scores)}

    cfg = CFG.replace(max_steps=100, validate_every=2, early_stop_metric="val_loss", patience=3,
                      checkpoint_every=0)
    res = drain(train(toy(), stream, cfg, tmp_path, validate=validate), show=False)
    assert res.stopped == "early_stop" and seen == [2, 4, 6, 8, 10] and res.step == 10
    assert (res.best_step, res.best_metric) == (4, 0.3)
    assert not torch.equal(res.best_state["net.0.weight"], res.model.net[0].weight.detach().cpu())
    saved = torch.load(tmp_path / "best_state.pt", weights_only=True)
    assert saved["step"] == 4
    torch.testing.assert_close(saved["state"]["net.0.weight"], res.best_state["net.0.weight"])


def test_param_groups_frozen_parameters_and_lower_lr():
    model = toy()
    model.net[2].weight.requires_grad_(False)
    frozen = model.net[2].weight.detach().clone()
    first = model.net[0].weight.detach().clone()
    groups = [{"params": model.net[0].parameters(), "lr": 1e-3}, {"params": model.net[2].parameters()}]
    res = drain(train(model, stream, CFG.replace(max_steps=3, warmup_fraction=0.0, schedule="constant"),
                      param_groups=groups), show=False)
    torch.testing.assert_close(model.net[2].weight.detach(), frozen, rtol=0, atol=0)
    assert not torch.equal(model.net[0].weight.detach(), first)
    assert res.history and res.history[-1]["lr"] == pytest.approx(1e-3)


def test_time_limit_and_plain_iterables():
    res = drain(train(toy(), stream(0), CFG.replace(max_steps=10**6, time_limit_min=0.0005)), show=False)
    assert res.stopped == "time_limit" and 0 < res.step < 10**6


def test_resume_refuses_another_kind_of_run(tmp_path):
    drain(train(toy(), stream, CFG.replace(max_steps=3), tmp_path, meta={"kind": "a"}), show=False)
    from napari_emseg.pretrain.state import CheckpointError

    with pytest.raises(CheckpointError, match="step_0000003.pt.*'a'"):
        drain(train(toy(), stream, CFG, tmp_path, resume=True, meta={"kind": "b"}), show=False)


def test_tensorboard_scalars_and_previews(tmp_path):
    pytest.importorskip("tensorboard")

    class WithPreview(Toy):
        def preview(self, batch):
            return {"x": batch["x"].numpy()}

    torch.manual_seed(0)
    res = drain(train(WithPreview(), stream, CFG.replace(max_steps=4, preview_every=2, tensorboard=True),
                      tmp_path), show=False)
    assert res.step == 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"loss", "mse", "lr"} <= set(acc.Tags()["scalars"])
    assert "preview/x" in acc.Tags()["images"]

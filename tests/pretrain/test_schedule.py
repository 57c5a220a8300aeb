"""The learning-rate schedule ends low whether max_steps or the time limit ends the run."""

from __future__ import annotations

import pytest

from napari_emseg.pretrain.trainer import TrainConfig, lr_factor


def test_cosine_follows_the_clock_when_the_time_limit_comes_first():
    cfg = TrainConfig(max_steps=100_000, time_limit_min=10.0, warmup_steps=10, min_lr_ratio=0.0)
    assert lr_factor(5, cfg) == pytest.approx(0.6)                     # warm-up by steps
    assert lr_factor(50, cfg, time_fraction=0.0) == pytest.approx(1.0, abs=1e-3)
    assert lr_factor(50, cfg, time_fraction=0.5) == pytest.approx(0.5, abs=1e-3)
    assert lr_factor(50, cfg, time_fraction=1.0) == pytest.approx(0.0, abs=1e-6)
    # steps ahead of the clock: the steps decide
    assert lr_factor(99_000, cfg, time_fraction=0.1) < 0.01

"""Frozen dataclass configs: JSON round trip, typed overrides, clear errors."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Literal

import pytest

from napari_emseg.config import Config, ConfigError


@dataclass(frozen=True)
class Optim(Config):
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    name: Literal["adamw", "sgd"] = "adamw"


@dataclass(frozen=True)
class Job(Config):
    steps: int = 100
    patch: tuple[int, ...] = (6, 96, 96)
    amp: bool = True
    limit: float | None = None
    optim: Optim = Optim()


def test_round_trip_json():
    job = Job(steps=5, patch=(1, 2, 3), limit=2.5, optim=Optim(lr=3e-4, name="sgd"))
    again = Job.from_json(job.to_json())
    assert again == job
    assert isinstance(again.patch, tuple) and isinstance(again.optim, Optim)


def test_frozen():
    with pytest.raises(FrozenInstanceError):
        Job().steps = 3


def test_overrides_parse_types():
    job = Job().override(["steps=7", "patch=1,16,16", "amp=false", "limit=none", "optim.lr=1e-3",
                          "optim.betas=0.9,0.999", "optim.name=sgd"])
    assert job == Job(steps=7, patch=(1, 16, 16), amp=False, limit=None,
                      optim=Optim(lr=1e-3, betas=(0.9, 0.999), name="sgd"))
    assert Job().override(["limit=3"]).limit == 3.0


@pytest.mark.parametrize("bad, match", [
    ("steps=seven", "integer"),
    ("optim.name=lion", "not one of"),
    ("stepz=3", "no field 'stepz'"),
    ("optim", "FIELD=VALUE"),
    ("optim.betas=1,2,3", "2 comma-separated"),
])
def test_bad_overrides_are_explained(bad, match):
    with pytest.raises(ConfigError, match=match):
        Job().override([bad])


def test_unknown_keys_strict_and_lenient():
    with pytest.raises(ConfigError, match="unknown field"):
        Job.from_dict({"steps": 1, "extra": 2})
    assert Job.from_dict({"steps": 1, "extra": 2}, strict=False).steps == 1


def test_yaml_file(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("steps: 3\noptim:\n  lr: 0.01\n")
    assert Job.from_file(p) == Job(steps=3, optim=Optim(lr=0.01))
    assert "optim.lr" in Job.field_paths()

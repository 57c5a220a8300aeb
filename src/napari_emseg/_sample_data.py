"""npe2 sample data: a synthetic EM volume with neuron and mitochondria ground truth."""

from __future__ import annotations

from typing import Any


def make_synthetic_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """Raw image plus neuron and mitochondria label layers, scaled in nm."""
    from .data.synthetic import make_synthetic_em

    em = make_synthetic_em(shape=(32, 256, 256), seed=0)
    scale = em.voxel_size
    return [
        (em.raw, {"name": "synthetic EM", "scale": scale, "metadata": {"unit": "nm"}}, "image"),
        (em.neurons, {"name": "neurons (ground truth)", "scale": scale, "opacity": 0.4, "visible": False}, "labels"),
        (em.mitochondria, {"name": "mitochondria (ground truth)", "scale": scale, "opacity": 0.6}, "labels"),
    ]

"""One entry point from a prediction map to instance labels, whatever the model predicts.

>>> labels = extract_instances(probs, model.info.target, offsets=model.info.offsets)  # doctest: +SKIP

``target`` is :attr:`ModelInfo.target <napari_emseg.models.info.ModelInfo>`:

========== ================================== ===========================================
target     path                               config
========== ================================== ===========================================
affinities fragments + waterz (neurons)       :class:`~.neurons.NeuronConfig`
boundaries affinities 1 - max(b(p), b(q)),    :class:`~.neurons.NeuronConfig`
           then as affinities
bcd        seeded watershed (mitochondria)    :class:`~.mitochondria.MitoConfig`
semantic   connected components per class     :class:`~.semantic.SemanticConfig`
========== ================================== ===========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import Config, ConfigError
from ..progress import Job, drain
from .mitochondria import MitoConfig, mitochondria_job
from .neurons import NeuronConfig, neurons_job
from .semantic import SemanticConfig, semantic_job

__all__ = ["TARGET_CONFIGS", "default_config", "extract_instances", "extract_instances_job"]

TARGET_CONFIGS: dict[str, type[Config]] = {
    "affinities": NeuronConfig,
    "boundaries": NeuronConfig,
    "bcd": MitoConfig,
    "semantic": SemanticConfig,
}
"""The config class of each post-processing target."""


def default_config(target: str) -> Config:
    """The default config for ``target`` (see :data:`TARGET_CONFIGS`)."""
    return _config_class(target)()


def _config_class(target: str) -> type[Config]:
    try:
        return TARGET_CONFIGS[target]
    except KeyError:
        raise ConfigError(
            f"no instance extraction for target {target!r}; choose one of {sorted(TARGET_CONFIGS)}"
        ) from None


def extract_instances_job(
    probs: Any,
    target: str,
    config: Config | None = None,
    *,
    offsets: Sequence[Sequence[int]] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Job[np.ndarray]:
    """:func:`extract_instances` as a generator of :class:`~napari_emseg.progress.Progress`.

    Drive it with :func:`napari_emseg.progress.drain` (CLI) or a napari generator worker; the
    labels are its return value.
    """
    expected = _config_class(target)
    cfg = config if config is not None else expected()
    if not isinstance(cfg, expected):
        raise ConfigError(
            f"target {target!r} takes a {expected.__name__}, got a {type(cfg).__name__}"
        )
    if target in ("affinities", "boundaries"):
        return (yield from neurons_job(probs, cfg, target=target, offsets=offsets, voxel_size=voxel_size))
    if target == "bcd":
        return (yield from mitochondria_job(probs, cfg))
    return (yield from semantic_job(probs, cfg))


def extract_instances(
    probs: Any,
    target: str,
    config: Config | None = None,
    *,
    offsets: Sequence[Sequence[int]] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> np.ndarray:
    """Instance labels from a prediction map.

    Parameters
    ----------
    probs
        ``(C, Z, Y, X)`` prediction map in ``[0, 1]`` (float16/float32, or uint8 with scale 255
        or a ``"scale"`` attribute): numpy, zarr, dask or h5py. Read channel by channel.
    target
        What the channels hold: ``"affinities"``, ``"boundaries"``, ``"bcd"`` or ``"semantic"``
        (``ModelInfo.target``).
    config
        :class:`~.neurons.NeuronConfig` (affinities, boundaries), :class:`~.mitochondria.MitoConfig`
        (bcd) or :class:`~.semantic.SemanticConfig` (semantic); ``None`` for the defaults.
    offsets
        Affinity offsets (``ModelInfo.offsets``); the first three must be the nearest
        neighbours. Only channels 0-2 are used.
    voxel_size
        ``(z, y, x)`` nm, for 3D neuron fragments on anisotropic data.

    Returns
    -------
    numpy.ndarray
        uint32 labels ``(Z, Y, X)``, 0 = background, objects numbered 1..n (a class map for
        ``SemanticConfig(output="classes")``).

    Raises
    ------
    VolumeTooLargeError
        The in-memory path would not fit in the memory available now (use blockwise mode).
    MapError, ConfigError
        Wrong map shape/type for the target, or a config of the wrong kind.
    """
    return drain(
        extract_instances_job(probs, target, config, offsets=offsets, voxel_size=voxel_size), show=False
    )

"""Random training patches read lazily from many volumes.

:func:`open_sources` opens every volume (anything :func:`napari_emseg.io.open_volume` reads),
checks it *before* any training (readable, large enough for the patch, not constant, no NaN;
each error names the file) and computes its intensity range once
(:func:`napari_emseg.data.normalize.intensity_range`). :class:`PatchBatches` is an
:class:`~torch.utils.data.IterableDataset` of whole batches: batch ``i`` first draws *one
dataset with equal probability* (as MS-Con samples its pretraining datasets), then
``batch_size`` random patches from it, read block by block from dask/zarr, never the whole
volume.

Reproducibility: batch ``i`` of rank ``r`` depends only on ``(seed, r, i)``
(``numpy.random.default_rng([seed, r, i])``), not on the number of DataLoader workers, the
order in which workers run, or what happened before. Workers take every ``num_workers``-th
batch and the DataLoader returns them in order, so a run that resumes at step ``s`` sees
exactly the batches ``s, s + 1, ...`` it would have seen without stopping (use
``PatchBatches.starting_at(s)``).

Anisotropy: patch shapes are ``(z, y, x)`` voxels, thin in z for serial-section EM. For a
volume whose voxels are known to be near-isotropic (largest / smallest voxel edge below
``isotropy_tolerance``; a file that does not state its voxel size counts as anisotropic) and when
``reorient_isotropic`` is set, each patch is cut with its thin axis along z, y or x at random
and transposed to ``(z, y, x)`` order, so the network sees every plane of an isotropic
FIB-SEM volume; anisotropic volumes are always cut with the thin axis along z.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .._finite import check_finite
from ..config import Config
from ..errors import EmsegError
from ..io import VolumeError, open_volume
from .normalize import NormConfig, intensity_range, normalize

__all__ = [
    "SamplerConfig",
    "VolumeSource",
    "DataError",
    "open_sources",
    "PatchBatches",
    "make_loader",
    "Transform",
]

logger = logging.getLogger(__name__)

Transform = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]
"""Turns a batch of normalised patches ``(B, z, y, x)`` into named arrays (views, targets)."""


class DataError(EmsegError, ValueError):
    """A training volume cannot be used (too small, constant, NaN); the message names it."""


@dataclass(frozen=True)
class SamplerConfig(Config):
    """How training patches are drawn.

    Attributes
    ----------
    patch
        Patch shape ``(z, y, x)`` in voxels.
    batch_size
        Patches per batch (per process under DDP).
    norm
        Intensity normalisation; the range is computed once per volume.
    reorient_isotropic, isotropy_tolerance
        See the module docstring (anisotropy-aware patches).
    min_std, max_tries
        Redraw a patch (up to ``max_tries`` times) whose normalised standard deviation is below
        ``min_std``, e.g. empty resin or padding around the tissue; 0 disables.
    workers
        DataLoader worker processes (0 = read in the training process).
    seed
        Seed of the patch stream.
    axes
        The volumes' stored axes when they are ambiguous (``"zyx"``, ``"czyx"`` ...; see
        :func:`napari_emseg.io.open_volume`); ``None``: the default rules.
    """

    patch: tuple[int, int, int] = (6, 96, 96)
    batch_size: int = 8
    norm: NormConfig = NormConfig()
    reorient_isotropic: bool = True
    isotropy_tolerance: float = 1.5
    min_std: float = 0.0
    max_tries: int = 10
    workers: int = 0
    seed: int = 0
    axes: str | None = None


@dataclass
class VolumeSource:
    """One training volume: where it is, its intensity range, which orientations fit the patch.

    The dask array is opened lazily in each process (and dropped when pickled for a worker).
    """

    path: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    lo: float
    hi: float
    orientations: tuple[int, ...] = (0,)
    invert: bool = False
    _data: Any = field(default=None, repr=False, compare=False)
    axes: str | None = None

    @property
    def data(self) -> Any:
        if self._data is None:
            self._data = open_volume(self.path, axes=self.axes).data
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    def read(self, rng: np.random.Generator, patch: Sequence[int]) -> np.ndarray:
        """A random normalised ``patch`` (z, y, x); the thin axis along a random allowed orientation."""
        axis = self.orientations[int(rng.integers(len(self.orientations)))]
        order = _axes_for(axis)
        # patch extent along the volume's axes
        extent = [0, 0, 0]
        for k, ax in enumerate(order):
            extent[ax] = int(patch[k])
        start = [int(rng.integers(0, s - e + 1)) for s, e in zip(self.shape, extent)]
        sl = tuple(slice(a, a + e) for a, e in zip(start, extent))
        block = self.data[sl]
        if hasattr(block, "compute"):
            import dask

            with dask.config.set(scheduler="synchronous"):
                block = block.compute()
        block = np.asarray(block)
        check_finite(block, self.path, offset=start, region=sl,
                     hint="clean the volume (e.g. replace NaN by 0) or leave it out")
        return normalize(np.transpose(block, order), self.lo, self.hi, self.invert)


def _axes_for(thin_axis: int) -> tuple[int, int, int]:
    """Axis order that brings ``thin_axis`` first, keeping the other two in order."""
    return (thin_axis, *[a for a in range(3) if a != thin_axis])  # type: ignore[return-value]


def open_sources(paths: Sequence[str | os.PathLike], cfg: SamplerConfig) -> list[VolumeSource]:
    """Open and check every training volume; compute its intensity range.

    Raises
    ------
    VolumeError
        A path cannot be read.
    DataError
        A volume is smaller than the patch or constant.
    NonFiniteError
        NaN or infinite values in the sampled blocks (a patch read later that holds some
        raises it too, naming the first bad voxel).
    """
    if not paths:
        raise DataError("no training volumes given; pass at least one --data PATH")
    patch = tuple(int(p) for p in cfg.patch)
    if len(patch) != 3 or min(patch) < 1:
        raise DataError(f"patch must be three positive sizes (z, y, x), got {cfg.patch}")
    sources = []
    for path in paths:
        text = os.fspath(path)
        try:
            vol = open_volume(text, axes=cfg.axes)
        except VolumeError:
            raise
        except Exception as err:  # unexpected reader failures still name the file
            raise VolumeError(f"{text}: cannot read it ({type(err).__name__}: {err})") from err
        shape = tuple(int(s) for s in vol.data.shape)
        orientations = _orientations(shape, vol.voxel_size, vol.voxel_size_known, patch, cfg)
        if not orientations:
            raise DataError(
                f"{text}: volume {shape} (z, y, x) is smaller than the patch {patch}; use a "
                f"smaller patch (--set data.patch=Z,Y,X) or leave this volume out"
            )
        _check_values(vol.data, text)
        lo, hi = intensity_range(vol.data, cfg.norm, seed=cfg.seed, what=text)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(f"{text}: intensities contain NaN or infinite values; clean the volume first")
        sources.append(VolumeSource(text, shape, tuple(vol.voxel_size), lo, hi, orientations,
                                    cfg.norm.invert, vol.data, cfg.axes))
        logger.info("training volume %s %s voxel size %s range [%.4g, %.4g]", text, shape,
                    vol.voxel_size, lo, hi)
    return sources


def _orientations(shape: tuple[int, ...], vs: Sequence[float], known: bool,
                  patch: tuple[int, ...], cfg: SamplerConfig) -> tuple[int, ...]:
    fits = [ax for ax in range(3) if all(shape[a] >= patch[k] for k, a in enumerate(_axes_for(ax)))]
    isotropic = known and max(vs) / min(vs) < cfg.isotropy_tolerance
    if not (cfg.reorient_isotropic and isotropic):
        fits = [ax for ax in fits if ax == 0]
    return tuple(fits)


def _check_values(data: Any, where: str, max_voxels: int = 2_000_000) -> None:
    """Reject all-constant volumes and NaN/inf in a sample of blocks (a few reads)."""
    shape = data.shape
    rng = np.random.default_rng(0)
    bs = [min(s, b) for s, b in zip(shape, (4, 256, 256))]
    n_blocks = max(1, min(16, max_voxels // int(np.prod(bs))))
    lo, hi = np.inf, -np.inf
    for _ in range(n_blocks):
        start = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, bs)]
        block = data[tuple(slice(a, a + b) for a, b in zip(start, bs))]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        check_finite(block, where, offset=start, region=tuple(slice(a, a + b) for a, b in zip(start, bs)),
                     hint="clean the volume (e.g. replace NaN by 0) or leave it out")
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if hi <= lo:
        raise DataError(f"{where}: every sampled voxel has the value {lo:g}; an all-constant volume "
                        "cannot be learned from (wrong dataset or channel?)")


class PatchBatches(IterableDataset):
    """An infinite, reproducible stream of batches (an ``IterableDataset``; see the module doc).

    Each item is a dict of ``torch`` tensors: what ``transform`` returns (default
    ``{"image": (B, 1, z, y, x)}``) plus ``"source"``, the index of the volume drawn.

    Parameters
    ----------
    sources
        From :func:`open_sources`.
    cfg
        Patch shape, batch size, seed.
    transform
        ``f(patches (B, z, y, x), rng) -> dict`` of arrays (augmented views, targets).
    start
        Index of the first batch (the training step to resume at).
    rank
        Process rank under DDP: each rank draws its own stream.
    """

    def __init__(self, sources: Sequence[VolumeSource], cfg: SamplerConfig,
                 transform: Transform | None = None, *, start: int = 0, rank: int = 0) -> None:
        super().__init__()
        if not sources:
            raise DataError("no training volumes")
        self.sources = list(sources)
        self.cfg = cfg
        self.transform = transform
        self.start = int(start)
        self.rank = int(rank)

    def starting_at(self, start: int) -> PatchBatches:
        """The same stream, beginning at batch ``start``."""
        return PatchBatches(self.sources, self.cfg, self.transform, start=start, rank=self.rank)

    def batch(self, index: int) -> dict[str, Any]:
        """Batch number ``index`` (deterministic)."""
        rng = np.random.default_rng([self.cfg.seed, self.rank, int(index)])
        k = int(rng.integers(len(self.sources)))
        src = self.sources[k]
        patches = np.stack([self._patch(src, rng) for _ in range(self.cfg.batch_size)])
        arrays = self.transform(patches, rng) if self.transform else {"image": patches[:, None]}
        out: dict[str, Any] = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
        out["source"] = torch.full((self.cfg.batch_size,), k, dtype=torch.long)
        return out

    def _patch(self, src: VolumeSource, rng: np.random.Generator) -> np.ndarray:
        p = src.read(rng, self.cfg.patch)
        tries = 1
        while self.cfg.min_std > 0 and p.std() < self.cfg.min_std and tries < self.cfg.max_tries:
            p = src.read(rng, self.cfg.patch)
            tries += 1
        return p

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + wid
        while True:
            yield self.batch(index)
            index += nw


def _worker_init(_: int) -> None:
    import signal

    torch.set_num_threads(1)
    # SIGTERM (SLURM signals every process) stops the training process, which saves and then
    # shuts its workers down; a worker dying first would make it fail instead of saving
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(batches: Any, workers: int = 0, *, pin_memory: bool = False) -> Any:
    """A DataLoader over a :class:`PatchBatches` (it yields whole batches, in order)."""
    return DataLoader(
        batches, batch_size=None, num_workers=int(workers), pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None, persistent_workers=False,
    )

"""Settings of tiled inference (:class:`InferenceConfig`), stored with every prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import Config

__all__ = ["InferenceConfig", "Mode", "Blend"]

Mode = Literal["auto", "3d", "slices", "ortho"]
Blend = Literal["gaussian", "linear", "constant"]


@dataclass(frozen=True)
class InferenceConfig(Config):
    """How :func:`~napari_emseg.inference.predict_tiled` cuts, runs and blends a volume.

    Attributes
    ----------
    tile
        Tile shape ``(z, y, x)`` fed to the network; ``None`` takes ``model.info.tile`` (for
        ortho-plane mode a cube of ``info.tile[-1]``). Rounded down to ``info.input_multiple``
        and shrunk to the volume where the volume is smaller.
    overlap
        Fraction of a tile shared with each neighbour, one value or one per axis ``(z, y, x)``,
        in ``[0, 1)``. The tile stride is ``int(tile * (1 - overlap))`` (as in MONAI). Output
        blocks read half the overlap beyond their edges as context.
    blend
        Weights that blend overlapping tiles: ``"gaussian"`` (centre-weighted, sigma =
        ``sigma_scale * tile``), ``"linear"`` (ramps across the overlap) or ``"constant"``.
    sigma_scale
        Gaussian sigma as a fraction of the tile, per axis (MONAI's default 0.125).
    batch
        Tiles per forward pass (3D models) or planes per forward pass (2D models); ``None``:
        4 tiles or 16 planes. Halved on out-of-memory, then the tile is halved.
    block
        Approximate output block ``(z, y, x)``: the unit that is read (with context), predicted,
        written and recorded for resume. Rounded to a multiple of the tile stride (or of the
        output's chunks). Peak memory grows with it, not with the volume.
    auto_block
        Size blocks from free memory (:mod:`~napari_emseg.inference.budget`): on CUDA ``block``
        grows (up to 64x its voxels) while its buffers fit a quarter of the free GPU memory; on
        the CPU it shrinks only when a tenth of the available RAM cannot hold it. An output that
        already exists keeps its chunks (a resumed run its blocks). ``False``: ``block`` as given.
    mode
        ``"3d"`` (volumetric network), ``"slices"`` (2D network applied to each z-slice),
        ``"ortho"`` (2D network applied to xy, xz and yz planes, averaged; for isotropic data),
        ``"auto"``: ``"3d"`` for a 3D model; for a 2D model ``"ortho"`` when the voxel size is
        known and near-isotropic (coarsest axis under 1.5x the finest) and the volume at least
        32 voxels along every axis, else ``"slices"``.
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), or e.g. ``"cuda:1"``, ``"cpu"``.
    precision
        Autocast dtype: ``"auto"`` (bf16 on recent GPUs, fp16 on older ones, fp32 on CPU),
        ``"bf16"``, ``"fp16"`` or ``"fp32"``. Blending always accumulates in float32.
    tta
        Test-time augmentation: average the predictions of all flips of each tile (8 in 3D,
        4 for 2D slices), each flipped back (affinities shifted back to their voxel).
    dtype
        Output type: ``"float16"`` or ``"uint8"`` (``round(255 p)``, attribute ``scale: 255``).
    channels_last
        Feed tensors in channels-last memory order: often faster for plain convolutions on
        GPUs; slower on CPU for networks with instance norm (measured on the ResUNet).
    workers
        Threads running forward passes at once. ``None``: one on a GPU; on the CPU the cores
        PyTorch's intra-op threads leave idle, ``cores // torch.get_num_threads()`` (2 with one
        torch thread on 2 cores). Results do not depend on it.
    compile
        Run the network through ``torch.compile`` (CUDA graphs on a CUDA device), once per tile
        shape; falls back to the uncompiled network, with a warning, when compiling fails.
        Compiling takes tens of seconds: worth it for long runs only.
    prefetch
        Blocks read ahead by a background thread while the network runs.
    resume
        Skip blocks that an earlier, interrupted run with the same settings already wrote.
    norm_samples
        Voxels sampled, once per volume, to find its intensity percentiles (``model.info.norm``).
    max_in_memory_gb
        Largest output returned as a numpy array when no ``out`` is given.
    zarr_format
        Format of zarr outputs created from a path (2 is read by every EM tool).
    """

    tile: tuple[int, int, int] | None = None
    overlap: float | tuple[float, float, float] = 0.25
    blend: Blend = "gaussian"
    sigma_scale: float = 0.125
    batch: int | None = None
    block: tuple[int, int, int] = (32, 256, 256)
    auto_block: bool = True
    mode: Mode = "auto"
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    tta: bool = False
    dtype: Literal["float16", "uint8"] = "float16"
    channels_last: bool = False
    workers: int | None = None
    compile: bool = False
    prefetch: int = 1
    resume: bool = True
    norm_samples: int = 4_000_000
    max_in_memory_gb: float = 4.0
    zarr_format: int = 2

    def overlap3(self) -> tuple[float, float, float]:
        """The overlap as one fraction per axis ``(z, y, x)``."""
        if isinstance(self.overlap, (int, float)):
            return (float(self.overlap),) * 3
        return tuple(float(o) for o in self.overlap)  # type: ignore[return-value]

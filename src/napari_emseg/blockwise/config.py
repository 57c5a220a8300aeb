"""Settings of blockwise segmentation (:class:`BlockwiseConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, ConfigError

__all__ = ["BlockwiseConfig"]


@dataclass(frozen=True)
class BlockwiseConfig(Config):
    """How a volume is cut into blocks, and how the blocks' objects are stitched.

    Attributes
    ----------
    blocks
        Core of a block ``(z, y, x)``: the region one task owns. Peak memory per worker grows
        with it (prediction rounds it to a multiple of the tile stride).
    halo
        Context read around each core for instance extraction ``(z, y, x)``. Objects are
        matched across faces inside it: make it at least half an object's extent (mitochondria)
        and a few seed windows (neuron fragments).
    match_iou
        Two objects on both sides of a face are one when, inside the halo beyond the face, the
        intersection over union of one block's label and the neighbour's exceeds this.
    retries
        How often a failed block task is retried (dask ``retries``); a block whose worker died
        is rescheduled by the scheduler anyway.
    keep_scratch
        Keep the per-block intermediate results (local labels, graphs) after the labels are
        written; by default they are removed.
    """

    blocks: tuple[int, int, int] = (32, 256, 256)
    halo: tuple[int, int, int] = (4, 32, 32)
    match_iou: float = 0.5
    retries: int = 2
    keep_scratch: bool = False

    def __post_init__(self) -> None:
        if min(self.blocks) < 1:
            raise ConfigError(f"blocks {self.blocks}: every size must be at least 1 voxel")
        if min(self.halo) < 0:
            raise ConfigError(f"halo {self.halo}: sizes must be 0 or more")
        if not 0.0 < self.match_iou <= 1.0:
            raise ConfigError(f"match_iou {self.match_iou} must lie in (0, 1]")
        if self.retries < 0:
            raise ConfigError(f"retries {self.retries} must be 0 or more")

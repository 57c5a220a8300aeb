"""Which network suits the data: 2D for separate images and serial sections, 3D for isotropic volumes.

A stack of unrelated micrographs gives a 3D network nothing to learn across z and makes it pay
for context that is noise; serial sections 5-10x coarser in z are nearly as bad; near-isotropic
FIB-SEM volumes are where 3D context pays. :func:`detect_layout` decides from

* the **voxel size** when it is known: z more than :data:`ANISOTROPY_2D` times coarser than
  y/x is a stack of sections (2D), anything closer to isotropic is a volume (3D);
* otherwise the **correlation of neighbouring slices**: the normalised correlation of slice
  ``z`` with slice ``z + 1`` against the correlation of a slice with itself shifted by one
  pixel in-plane. Measured on real ssTEM (ISBI 2012, Gerhard 2013 VNC, FAFB): adjacent
  sections keep 5-35 % of it; isotropic volumes keep most.
* a stack with fewer slices than a 3D patch needs is always 2D.

Mitochondria and semantic classes are the exception: in a near-isotropic volume they still get
a 2D network (``kind="volume"``), trained on the painted slices and predicted on the xy, xz and
yz planes (ortho-plane inference), with 3D objects, as empanada-napari and RETINA do for
isotropic data. A 3D network learns only from the painted planes inside each cube it sees, and
starts from a self-supervised encoder that has never seen a mitochondrion; the 2D network learns
from every painted pixel and continues the bundled mitochondria model (for classes, the bundled
pretrained U-Net). Measured (docs/benchmarks.md, "A
near-isotropic volume"): 3 painted slices, 10 CPU-minutes, the 3D network reached AP50
0.51-0.68 on two synthetic stand-ins where the 2D one reached 0.84-0.85; for three classes
(other, membrane, mitochondria) on the second stand-in, mean IoU 0.936 for the 2D network
against 0.853 for the 3D one (two seeds). Neurons keep the 3D network, whose z-affinities join
a neurite through the volume.

The result, with the figures behind it, is recorded in the fine-tuned model's card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Layout", "detect_layout", "ANISOTROPY_2D", "CORRELATION_3D"]

Dims = Literal["auto", "2d", "3d"]

#: z coarser than this many times y/x: a stack of sections, trained with a 2D network
ANISOTROPY_2D = 3.0
#: adjacent slices must keep this fraction of the one-pixel in-plane correlation to count as a volume
CORRELATION_3D = 0.6
#: fewer slices than this cannot feed a 3D patch
MIN_SLICES_3D = 8


@dataclass(frozen=True)
class Layout:
    """What the data looks like, and the network dimensionality chosen for it.

    Attributes
    ----------
    dims
        2 or 3.
    kind
        ``"sections"`` (separate images or serial sections), ``"volume"``, or ``"given"`` (the
        user chose).
    reason
        One sentence a user can read in the model card.
    anisotropy
        z voxel size over the mean in-plane voxel size (``None``: unknown).
    z_correlation, xy_correlation
        Mean normalised correlation of adjacent slices, and of a slice with its one-pixel shift.
    """

    dims: int
    kind: str
    reason: str
    anisotropy: float | None = None
    z_correlation: float | None = None
    xy_correlation: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def detect_layout(image: Any, voxel_size: tuple[float, float, float] | None = None, dims: Dims = "auto",
                  *, task: str | None = None, max_side: int = 512, max_pairs: int = 8) -> Layout:
    """Choose 2D or 3D for ``image`` ``(z, y, x)`` (reads at most ``max_pairs`` slice pairs,
    centre crops of ``max_side``); ``task`` ``"mitochondria"`` or ``"semantic"`` keeps a 2D
    network for volumes too (module docstring).

    ``dims`` ``"2d"``/``"3d"`` forces the choice (still measured, for the card).
    """
    nz = int(image.shape[0])
    zc, xyc = slice_correlations(image, max_side=max_side, max_pairs=max_pairs)
    aniso = None
    if voxel_size is not None:
        vz, vy, vx = (float(v) for v in voxel_size)
        aniso = vz / ((vy + vx) / 2)
    common = dict(anisotropy=aniso, z_correlation=zc, xy_correlation=xyc)
    if dims in ("2d", "3d"):
        return Layout(int(dims[0]), "given", f"{dims.upper()} network as requested", **common)
    if dims != "auto":
        raise ValueError(f"dims {dims!r}: choose 'auto', '2d' or '3d'")
    ratio = None if zc is None or not xyc else zc / xyc
    if nz < MIN_SLICES_3D:
        return Layout(2, "sections", f"only {nz} slice(s): too few for 3D context, 2D network", **common)
    if aniso is not None:
        if aniso >= ANISOTROPY_2D:
            kept = f" (adjacent slices keep {ratio:.0%} of the in-plane correlation)" if ratio is not None else ""
            return Layout(2, "sections", f"z is {aniso:.1f}x coarser than y/x{kept}: serial sections or "
                          "separate images, 2D network", **common)
        return _volume(f"near-isotropic voxels (z/xy {aniso:.1f})", task, common)
    if ratio is not None and ratio >= CORRELATION_3D:
        return _volume(f"adjacent slices keep {ratio:.0%} of the in-plane correlation: a near-isotropic volume",
                       task, common)
    return Layout(2, "sections", "adjacent slices keep "
                  + (f"{ratio:.0%}" if ratio is not None else "little")
                  + " of the in-plane correlation: separate images or serial sections, 2D network", **common)


#: tasks that keep a 2D network in a near-isotropic volume (module docstring)
TASKS_2D_IN_VOLUMES = ("mitochondria", "semantic")


def _volume(why: str, task: str | None, common: dict[str, Any]) -> Layout:
    if task in TASKS_2D_IN_VOLUMES:
        return Layout(2, "volume", f"{why}; {'mitochondria' if task == 'mitochondria' else 'classes'} painted on "
                      "slices: 2D network, predicted on the xy, xz and yz planes, 3D objects", **common)
    return Layout(3, "volume", f"{why}: 3D network", **common)


def slice_correlations(image: Any, *, max_side: int = 512, max_pairs: int = 8) -> tuple[float | None, float | None]:
    """Mean normalised correlation of adjacent slices and of each slice with its one-pixel
    in-plane shift (centre crops, a few pairs spread over z). ``(None, xy)`` for one slice."""
    nz, ny, nx = (int(s) for s in image.shape)
    hy, hx = min(ny, max_side), min(nx, max_side)
    y0, x0 = (ny - hy) // 2, (nx - hx) // 2
    starts = np.unique(np.linspace(0, max(0, nz - 2), min(max_pairs, max(1, nz - 1))).astype(int))
    zs, xys = [], []
    for z in starts:
        block = image[int(z): int(z) + 2, y0: y0 + hy, x0: x0 + hx]
        block = _highpass(np.asarray(block.compute() if hasattr(block, "compute") else block, np.float32))
        a = block[0]
        xys.append((_corr(a[:, 1:], a[:, :-1]) + _corr(a[1:], a[:-1])) / 2)
        if block.shape[0] == 2:
            zs.append(_corr(a, block[1]))
    xy = float(np.nanmean(xys)) if xys else None
    return (float(np.nanmean(zs)) if zs else None), xy


def _highpass(block: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Each slice minus its Gaussian blur: illumination and vignetting correlate unrelated
    images; the structure (membranes, organelles) does not."""
    from scipy import ndimage as ndi

    return np.stack([s - ndi.gaussian_filter(s, sigma) for s in block])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")

"""2D networks on 3D tiles: slice-wise and ortho-plane (xy, xz, yz averaged) prediction.

A 3D tile ``(B, 1, Z, Y, X)`` is cut into planes along one spatial axis; the planes go through
the 2D network as a batch and are stacked back. Slice-wise mode cuts along z only (for
anisotropic data). Ortho-plane mode (RETINA, Xing et al. 2025) also cuts along y (xz planes)
and x (yz planes) and averages the three predictions, which suits isotropic volumes.

In a plane cut along axis ``a`` the network's ``(y, x)`` axes are the other two volume axes in
order, so an affinity channel with in-plane offset ``(0, dy, dx)`` in the network's frame is
the volume offset with ``dy`` and ``dx`` placed on those axes: the network's ``aff_y`` of an xz
plane is the volume's ``aff_z``. :func:`channel_map` gives that mapping; maps of other
targets (boundaries, BCD, classes) do not depend on orientation and are averaged as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models.info import ModelInfo

__all__ = ["plane_axes", "to_planes", "from_planes", "channel_map", "predict_planes"]


def plane_axes(mode: str) -> tuple[int, ...]:
    """Volume axes ``(0=z, 1=y, 2=x)`` along which tiles are cut into planes."""
    return (0, 1, 2) if mode == "ortho" else (0,)


def _perm(axis: int) -> tuple[int, ...]:
    rest = [2 + a for a in range(3) if a != axis]
    return (0, 2 + axis, 1, *rest)


def to_planes(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``(B, C, Z, Y, X)`` -> ``(B * n, C, h, w)``: the planes perpendicular to ``axis``."""
    p = x.permute(_perm(axis))
    return p.reshape(-1, *p.shape[2:])


def from_planes(y: torch.Tensor, batch: int, axis: int) -> torch.Tensor:
    """Inverse of :func:`to_planes` for a network output ``(B * n, C', h, w)``."""
    y = y.reshape(batch, -1, *y.shape[1:])
    return y.permute(tuple(int(i) for i in np.argsort(_perm(axis))))


def channel_map(info: ModelInfo, axis: int, mode: str) -> tuple[list[int], list[int]]:
    """``(source, destination)`` channel indices of a 2D network's output in a plane cut along
    ``axis``: output channel ``source[i]`` of the network is volume channel ``destination[i]``.

    Identity except for affinities in ortho-plane mode, where in-plane offsets are rotated into
    the volume frame; a network channel with an out-of-plane offset, or whose rotated offset the
    model does not predict, is left out.
    """
    n = info.out_channels
    if info.target != "affinities" or mode != "ortho":
        return list(range(n)), list(range(n))
    offsets = [tuple(int(v) for v in o) for o in info.offsets]
    if len(offsets) != n:
        return list(range(n)), list(range(n))
    ys, xs = [a for a in range(3) if a != axis]
    src, dst = [], []
    for c, (dz, dy, dx) in enumerate(offsets):
        if dz != 0:
            continue
        vol = [0, 0, 0]
        vol[ys], vol[xs] = dy, dx
        if tuple(vol) in offsets:
            src.append(c)
            dst.append(offsets.index(tuple(vol)))
    return src, dst


def predict_planes(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    info: ModelInfo,
    mode: str,
    batch: int,
) -> torch.Tensor:
    """Run a 2D network over 3D tiles ``x`` ``(B, 1, Z, Y, X)``; returns ``(B, C, Z, Y, X)``.

    ``net`` maps planes ``(b, 1, h, w)`` to probabilities ``(b, C, h, w)``; at most ``batch``
    planes go through it at once.
    """
    b = x.shape[0]
    c_out = info.out_channels
    total: torch.Tensor | None = None
    count = torch.zeros(c_out, dtype=torch.float32, device=x.device)
    for axis in plane_axes(mode):
        planes = to_planes(x, axis)
        outs = [net(planes[i : i + batch]) for i in range(0, planes.shape[0], batch)]
        y = from_planes(torch.cat(outs), b, axis)
        src, dst = channel_map(info, axis, mode)
        if total is None:
            total = torch.zeros((b, c_out, *x.shape[2:]), dtype=torch.float32, device=x.device)
        if src == dst and len(src) == c_out:
            total += y
        else:
            total[:, dst] += y[:, src]
        count[dst] += 1
    assert total is not None
    if bool((count == 1).all()):
        return total
    return total / count.clamp(min=1).view(1, -1, 1, 1, 1)

"""Refuse non-finite input (NaN, infinity) where it is read, saying where it is.

One NaN voxel in an image makes every tile that touches it predict NaN (0 objects, exit 0)
and makes a training loss NaN (which reads like a learning-rate problem). The checks run on
blocks the caller reads anyway (sampled blocks, streamed blocks, the painted crop), so a big
volume is never read just to be checked; the message names the first bad voxel in volume
coordinates::

    image has 100 NaN voxels, first at z=3,y=10,x=10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import EmsegError

__all__ = ["NonFiniteError", "check_finite"]


class NonFiniteError(EmsegError, ValueError):
    """The input holds NaN or infinite values; the message says how many and where the first is."""


def check_finite(block: Any, what: str = "image", *, offset: Sequence[int] | None = None,
                 region: Sequence[slice] | None = None, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` when the float ``block`` holds NaN or +-inf.

    Parameters
    ----------
    block
        A numpy array (integer types pass at once).
    what
        How the message names the data (``"image"``, a file name).
    offset
        The block's first voxel in the volume, so the message gives volume coordinates.
    region
        The region the block covers; named in the message when only part of the volume was checked.
    hint
        What to do, appended to the message (default: clean the volume).
    """
    a = np.asarray(block)
    if a.dtype.kind not in "fc" or a.size == 0 or bool(np.isfinite(a).all()):
        return
    bad = ~np.isfinite(a)
    n = int(bad.sum())
    n_nan = int(np.isnan(a).sum())
    kind = "NaN" if n_nan == n else "infinite" if n_nan == 0 else "NaN or infinite"
    first = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
    off = [0] * (a.ndim - len(offset or ())) + [int(o) for o in (offset or ())][-a.ndim:]
    names = "tczyx"[-a.ndim:] if a.ndim <= 5 else [f"axis{i}" for i in range(a.ndim)]
    where = ",".join(f"{k}={int(i) + o}" for k, i, o in zip(names, first, off))
    scope = ""
    if region is not None:
        scope = " in the block " + ", ".join(f"{k} {s.start}:{s.stop}" for k, s in zip("zyx", region))
    hint = hint or "replace them (e.g. by 0 or the median intensity) or crop them out, then run again"
    raise NonFiniteError(f"{what} has {n} {kind} voxels{scope}, first at {where}; {hint}")

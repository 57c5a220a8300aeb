"""Read probability maps channel by channel, in their stored type.

Tiled inference writes maps ``(C, Z, Y, X)`` in ``[0, 1]`` either as float16/float32 or as
uint8 with the zarr attribute ``"scale": 255``. Post-processing never converts a whole map to
float32 at once: it reads one channel at a time (:func:`read_channel`), compares it against
thresholds expressed in the stored scale (:func:`native_threshold`), and converts only the
channels an algorithm really needs as floats (:func:`channel_as_float32`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EmsegError

__all__ = [
    "MapError",
    "map_scale",
    "read_channel",
    "channel_as_float32",
    "native_threshold",
    "check_map",
]


class MapError(EmsegError, ValueError):
    """A probability map has the wrong shape, type or channel count for the chosen target."""


def map_scale(probs: Any) -> float:
    """The value that stands for probability 1 in ``probs``.

    Float maps: 1.0. Integer maps: the array's ``"scale"`` attribute (zarr/h5 ``attrs``) if
    present, otherwise 255 for uint8. Other integer types need the attribute.
    """
    dtype = np.dtype(probs.dtype)
    if dtype.kind == "f":
        return 1.0
    attrs = getattr(probs, "attrs", None)
    if attrs is not None and "scale" in attrs:
        return float(attrs["scale"])
    if dtype == np.uint8:
        return 255.0
    raise MapError(
        f"probability map of type {dtype} has no 'scale' attribute; store maps as float16/float32 "
        "in [0, 1], or as uint8 (scale 255), or set the zarr attribute 'scale'"
    )


def check_map(probs: Any, channels: int | None, what: str) -> tuple[int, int, int, int]:
    """Check that ``probs`` is ``(C, Z, Y, X)`` with ``channels`` channels (``None``: at least 2)."""
    shape = tuple(int(s) for s in probs.shape)
    if len(shape) != 4:
        raise MapError(
            f"{what}: expected a probability map (C, Z, Y, X), got shape {shape}; a 2D map needs "
            "a z axis of length 1"
        )
    if np.dtype(probs.dtype).kind not in "fui":
        raise MapError(f"{what}: probability map of type {probs.dtype} is not numeric")
    if channels is not None and shape[0] != channels:
        raise MapError(f"{what}: expected {channels} channel(s), got {shape[0]} (shape {shape})")
    if channels is None and shape[0] < 2:
        raise MapError(f"{what}: expected at least 2 channels, got {shape[0]} (shape {shape})")
    map_scale(probs)  # raises for integer maps without a scale
    return shape  # type: ignore[return-value]


def read_channel(probs: Any, c: int, z: int | slice | None = None) -> np.ndarray:
    """Channel ``c`` (optionally one section or a range of sections) as a numpy array, stored type."""
    index: tuple[Any, ...] = (c,) if z is None else (c, z)
    block = probs[index]
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    return np.asarray(block)


def channel_as_float32(probs: Any, c: int, out: np.ndarray | None = None) -> np.ndarray:
    """Channel ``c`` as float32 in ``[0, 1]``, written into ``out`` if given (section by section)."""
    scale = map_scale(probs)
    shape = tuple(int(s) for s in probs.shape[1:])
    if out is None:
        out = np.empty(shape, np.float32)
    # read in slabs of sections so an integer map never exists as float64 or whole float32 twice
    step = max(1, int(2**24 // max(1, shape[1] * shape[2])))
    for z0 in range(0, shape[0], step):
        z1 = min(shape[0], z0 + step)
        slab = read_channel(probs, c, slice(z0, z1))
        np.multiply(slab, np.float32(1.0 / scale), out=out[z0:z1], casting="unsafe")
    return out


def native_threshold(threshold: float, scale: float) -> float:
    """``threshold`` in ``[0, 1]`` expressed in the stored scale (e.g. 0.9 -> 229.5 for uint8).

    Comparing a uint8 channel with ``native_threshold(t, 255)`` gives the same mask as comparing
    the channel divided by 255 with ``t``, without making a float copy.
    """
    return float(threshold) * float(scale)

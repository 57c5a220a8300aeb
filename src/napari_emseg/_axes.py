"""Which axes of a stored array are z, y, x or channels: the rules behind ``open_volume``.

Every command wants a grayscale ``(z, y, x)`` volume (images, labels, predictions read as
labels). Files do not always say which axis is which, and guessing wrong loses data silently
(a 3-slice TIFF read as RGB and ``--channel 0`` keeping one slice of three), so:

* ``axes`` given (``--axes``): one letter per axis of the stored array, from ``t c z y x``
  (``zyx``, ``cyx``, ``czyx``, ``zcyx``, ``yx``, ``yxc``, ``tczyx`` ...). They are obeyed: a
  channel axis longer than 1 needs ``channel``, ``t`` must have length 1, a missing ``z`` makes a
  one-slice volume.
* otherwise: axes of length 1 are dropped, never taken for channels (``(1, 3, Y, X)`` is three
  slices). Channels are only (a) a TIFF's interleaved samples (pixels stored as RGB/RGBA, axes
  ending in ``S``), (b) a TIFF ``C`` or planar ``S`` axis *besides* a z axis (``ZCYX``), (c) the
  one axis of length 2-4 of an array with four axes longer than 1. A 3- or 4-page TIFF that
  tifffile tagged RGB (``SYX``) or ImageJ channels (``CYX``) is three or four z-slices.

A grayscale micrograph saved as colour (RGB or RGBA samples whose three colour channels are equal
everywhere and whose alpha is constant: what many microscope programs and image editors write)
is read as its gray channel without ``channel``; a real colour image still needs one.

``channel`` on data without a channel axis, or where it is not clear which axis holds the
channels, is an error that says to name the axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["AXES_LETTERS", "parse_axes", "to_zyx", "gray_stored_as_colour"]

AXES_LETTERS = "tczyx"

GRAY_CHECK_BYTES = 2**31
"""Largest colour array read through to check whether it is gray stored as colour (2 GiB)."""


def _error(message: str) -> Exception:
    from .io import VolumeError

    return VolumeError(message)


def parse_axes(text: str | None) -> str | None:
    """Normalise an ``--axes`` value (``"ZYX"`` -> ``"zyx"``); ``None``/``""``/``"auto"`` -> ``None``."""
    if text is None:
        return None
    axes = str(text).strip().lower().replace(",", "")
    if axes in ("", "auto"):
        return None
    bad = sorted(set(axes) - set(AXES_LETTERS))
    if bad or len(set(axes)) != len(axes) or "y" not in axes or "x" not in axes:
        raise _error(f"--axes {text!r}: give one letter per axis from t, c, z, y, x, each once, with y and x "
                     "(e.g. zyx, cyx, czyx, yx)")
    return axes


def to_zyx(arr: Any, where: str, *, channel: int | None = None, axes: str | None = None,
           hint: str | None = None) -> Any:
    """A lazy ``(z, y, x)`` view of ``arr`` (dask) under the rules of the module docstring.

    ``hint`` is the file's own axes string (tifffile's ``series.axes``), ``None`` when untagged.
    """
    if arr.dtype.kind not in "biuf":
        raise _error(f"{where}: data type {arr.dtype} is not numeric; EM volumes are integer or float images")
    if arr.size == 0 or 0 in arr.shape:
        raise _error(f"{where}: the array is empty (shape {tuple(arr.shape)})")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    axes = parse_axes(axes)
    if axes is not None:
        return _explicit(arr, where, channel, axes)
    return _auto(arr, where, channel, hint)


def _take_channel(arr: Any, where: str, channel: int | None, axis: int, how: str, samples: bool = False) -> Any:
    """Channel ``channel`` of ``axis``; without one, the only channel, or the gray of colour
    ``samples`` (a file's interleaved samples per pixel) that hold a gray image."""
    import dask.array as da

    n = arr.shape[axis]
    if channel is None:
        if n == 1 or (samples and gray_stored_as_colour(arr, axis)):
            return da.take(arr, 0, axis=axis)
        raise _error(
            f"{where}: has {n} channels (shape {tuple(arr.shape)}, channel axis {axis}{how}); EM segmentation "
            f"needs one grayscale channel: pass channel=0..{n - 1} (CLI: --channel N), name the axes "
            f"(--axes, e.g. zyx if they are slices) or convert the image to grayscale")
    if not 0 <= channel < n:
        raise _error(f"{where}: channel {channel} out of range 0..{n - 1} (shape {tuple(arr.shape)}, channel axis {axis})")
    return da.take(arr, channel, axis=axis)


def gray_stored_as_colour(arr: Any, axis: int = -1) -> bool:
    """Whether ``arr``'s ``axis`` holds RGB or RGBA samples of a gray image: 3 or 4 samples, the
    first three equal at every pixel, the fourth (alpha) the same everywhere. Reads the whole
    array once (dask or numpy); ``False`` without reading for arrays over :data:`GRAY_CHECK_BYTES`.
    """
    import dask.array as da

    n = arr.shape[axis]
    if n not in (3, 4) or arr.nbytes > GRAY_CHECK_BYTES:
        return False
    arr = da.asarray(arr)
    r, g, b = (da.take(arr, i, axis=axis) for i in range(3))
    checks = [(r == g).all(), (r == b).all()]
    if n == 4:
        alpha = da.take(arr, 3, axis=axis)
        checks += [alpha.min() == alpha.max()]
    return bool(all(da.compute(*checks)))


def _explicit(arr: Any, where: str, channel: int | None, axes: str) -> Any:
    shape = tuple(arr.shape)
    if len(axes) != arr.ndim:
        raise _error(f"{where}: --axes {axes} names {len(axes)} axes but the data has {arr.ndim}, shape {shape}")
    if "t" in axes:
        t = axes.index("t")
        if shape[t] != 1:
            raise _error(f"{where}: {shape[t]} time points (axis t of {axes}, shape {shape}); select one first "
                         "(e.g. 'file.zarr:path/to/one/timepoint')")
        arr, axes = arr[(slice(None),) * t + (0,)], axes.replace("t", "")
    if "c" in axes:
        c = axes.index("c")
        arr, axes = _take_channel(arr, where, channel, c, f", --axes {axes}"), axes.replace("c", "")
    elif channel is not None:
        raise _error(f"{where}: --channel {channel} but --axes {axes} has no channel axis (c); drop --channel "
                     "or name the channel axis")
    if "z" not in axes:
        arr, axes = arr[None], "z" + axes
    return arr.transpose([axes.index(a) for a in "zyx"])


def _auto(arr: Any, where: str, channel: int | None, hint: str | None) -> Any:
    shape = tuple(int(s) for s in arr.shape)
    long = [i for i, s in enumerate(shape) if s > 1]
    ch_axis, how, samples = None, "", False
    if hint and len(hint) == arr.ndim:
        tag = hint.upper()
        if tag.endswith("S") and shape[-1] > 1:
            ch_axis, how, samples = arr.ndim - 1, f", the file stores {shape[-1]} samples per pixel", True
        else:
            for letter in "CS":
                i = tag.find(letter)
                if i >= 0 and shape[i] > 1 and any(j != i and tag[j] not in "YX" for j in long):
                    ch_axis, how = i, f", tagged {letter} in the file's axes {hint}"
    elif hint is None and len(long) == 4:
        small = [i for i in long if shape[i] <= 4]
        if len(small) == 1:
            ch_axis, how = small[0], ""
    if ch_axis is not None:
        arr = _take_channel(arr, where, channel, ch_axis, how, samples)
    elif channel == 0 and arr.ndim > 3 and 1 in shape:
        pass  # channel 0 of an axis of length 1 (a (1, Z, Y, X) map): dropped below, as without --channel
    elif channel is not None:
        if len(long) > 3:
            raise _error(f"{where}: shape {shape}: which axis holds the channels is not clear; name every axis "
                         "with --axes (e.g. czyx or zcyx)")
        raise _error(f"{where}: --channel {channel} but the data has no channel axis (shape {shape}, read as "
                     "z, y, x); drop --channel, or name the axes with --axes (e.g. cyx) if one holds channels")
    # axes of length 1 beyond three (OME t=1, c=1, a (1, Z, Y, X) stack) are never channels
    while arr.ndim > 3 and 1 in arr.shape:
        arr = arr.squeeze(axis=tuple(arr.shape).index(1))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise _error(
            f"{where}: expected a 2D image or a 3D volume, got {arr.ndim} dimensions {tuple(arr.shape)}; "
            f"name the axes (--axes, e.g. czyx with --channel N) or select one time point/channel first "
            f"(e.g. 'file.zarr:path/to/3d')")
    return arr

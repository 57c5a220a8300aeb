"""EM augmentations shared by pretraining and fine-tuning.

Every function takes ``(z, y, x)`` ``float32`` arrays (a 2D image is a one-section volume)
and a :class:`numpy.random.Generator`, so one seeded generator decides everything and a batch
is reproducible from its seed. Geometric transforms act on *several arrays at once* with the
same random draw: the image, its labels, a reconstruction target. Float arrays are resampled
linearly, integer arrays (labels) by nearest neighbour.

* geometry (:func:`random_geometry`): flips, 90-degree rotations in the section plane,
  in-plane translation/scaling (MONAI ``Affine``), in-plane elastic deformation (MONAI
  ``Rand2DElasticd``, the same field for every section, as the sections of serial EM are cut
  and imaged one by one), misaligned sections (a shift of all sections below a random cut);
* intensity (:func:`random_intensity`): brightness, contrast, gamma (MONAI ``AdjustContrast``),
  Gaussian blur (MONAI ``GaussianSmooth``), Gaussian noise;
* defects (:func:`missing_sections`), cut-out of small patches (:func:`cutout`), splicing a
  block copied from elsewhere (:func:`splice`) and large-block masking (:func:`block_mask`).

:func:`augment` chains them as an :class:`AugmentConfig` says (all probabilities 0 = identity).

>>> rng = np.random.default_rng(0)
>>> img = np.zeros((4, 32, 32), np.float32); lab = np.zeros((4, 32, 32), np.uint32)
>>> out, (lab2,) = augment(img, [lab], rng, AugmentConfig(flip=0.5, rotate90=0.5, noise=1.0))
>>> out.shape, lab2.dtype
((4, 32, 32), dtype('uint32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import Config

__all__ = [
    "AugmentConfig",
    "augment",
    "random_geometry",
    "random_intensity",
    "missing_sections",
    "cutout",
    "block_mask",
    "splice",
]


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Which augmentations to apply and how strongly; every ``p_*``-like field is a probability.

    Intensities are assumed normalised to about [-1, 1] (see :mod:`napari_emseg.data.normalize`).

    Attributes
    ----------
    flip, flip_z
        Probability of flipping y and x (each independently), and z.
    rotate90
        Probability of a rotation by 90, 180 or 270 degrees in the (y, x) plane (180 only
        when y and x differ in size).
    affine, translate, scale
        Probability of an in-plane affine transform; its shift (fraction of the size) and
        scale change (``1 +- scale``).
    elastic, elastic_spacing, elastic_magnitude
        Probability of an in-plane elastic deformation; control-point spacing (pixels) and the
        range of displacement magnitudes (pixels).
    misalign, misalign_max
        Probability that sections below a random cut are shifted by up to ``misalign_max`` px.
    brightness, brightness_range
        Probability of adding a shift drawn from ``+-brightness_range``.
    contrast, contrast_range
        Probability of scaling about the mean by ``1 +- contrast_range``.
    gamma, gamma_range
        Probability of a gamma change with gamma drawn from ``gamma_range``.
    blur, blur_sigma
        Probability of Gaussian in-plane blur with sigma (px) drawn from ``blur_sigma``.
    noise, noise_std
        Probability of additive Gaussian noise with a standard deviation from ``noise_std``.
    missing, missing_max
        Probability that 1..``missing_max`` sections are blanked (set to the mean), as lost
        sections are in serial EM.
    cutout, cutout_count, cutout_size
        Probability of blanking ``cutout_count`` (min, max) square patches of side
        ``cutout_size`` (min, max) px in every section.
    block, block_fraction
        Probability of masking one large block whose edges are ``block_fraction`` (min, max)
        of the volume's edges.
    splice, splice_fraction
        Probability of pasting a block (edges ``splice_fraction`` of the volume's) copied from
        another place of the same volume.
    """

    flip: float = 0.5
    flip_z: float = 0.0
    rotate90: float = 0.5
    affine: float = 0.0
    translate: float = 0.05
    scale: float = 0.1
    elastic: float = 0.0
    elastic_spacing: float = 24.0
    elastic_magnitude: tuple[float, float] = (1.0, 3.0)
    misalign: float = 0.0
    misalign_max: int = 8
    brightness: float = 0.0
    brightness_range: float = 0.15
    contrast: float = 0.0
    contrast_range: float = 0.2
    gamma: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise: float = 0.0
    noise_std: tuple[float, float] = (0.02, 0.1)
    missing: float = 0.0
    missing_max: int = 1
    cutout: float = 0.0
    cutout_count: tuple[int, int] = (1, 32)
    cutout_size: tuple[int, int] = (8, 24)
    block: float = 0.0
    block_fraction: tuple[float, float] = (0.25, 0.5)
    splice: float = 0.0
    splice_fraction: tuple[float, float] = (0.2, 0.4)


def augment(
    image: np.ndarray,
    labels: Sequence[np.ndarray],
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Geometry on image and labels alike, then intensity changes and defects on the image.

    Parameters
    ----------
    image
        ``(z, y, x)`` float image, normalised.
    labels
        Arrays of the same shape transformed with the image (integer: nearest neighbour).
    rng
        The generator that decides everything.
    cfg
        What to apply.

    Returns
    -------
    tuple
        ``(image, [labels...])``.
    """
    out = random_geometry([image, *labels], rng, cfg)
    img = random_intensity(out[0], rng, cfg)
    if cfg.missing and rng.random() < cfg.missing:
        img = missing_sections(img, rng, cfg.missing_max)
    if cfg.cutout and rng.random() < cfg.cutout:
        img = cutout(img, rng, cfg.cutout_count, cfg.cutout_size)
    if cfg.splice and rng.random() < cfg.splice:
        img = splice(img, rng, cfg.splice_fraction)
    if cfg.block and rng.random() < cfg.block:
        img = block_mask(img, rng, cfg.block_fraction)
    return img, out[1:]


# -- geometry ----------------------------------------------------------------------------------
def random_geometry(
    arrays: Sequence[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig
) -> list[np.ndarray]:
    """Apply one random geometric transform to every array (same shape ``(z, y, x)``)."""
    arrays = [np.asarray(a) for a in arrays]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"random_geometry: arrays differ in shape {[a.shape for a in arrays]}")
    for axis, p in ((1, cfg.flip), (2, cfg.flip), (0, cfg.flip_z)):
        if p and rng.random() < p:
            arrays = [np.flip(a, axis) for a in arrays]
    if cfg.rotate90 and rng.random() < cfg.rotate90:
        k = int(rng.integers(1, 4)) if shape[1] == shape[2] else 2
        arrays = [np.rot90(a, k, axes=(1, 2)) for a in arrays]
    if cfg.affine and rng.random() < cfg.affine:
        shift = rng.uniform(-cfg.translate, cfg.translate, 2) * np.array(shape[1:])
        zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale, 2)
        arrays = [_affine(a, shift, zoom) for a in arrays]
    if cfg.elastic and rng.random() < cfg.elastic:
        arrays = _elastic(arrays, int(rng.integers(2**31 - 1)), cfg)
    if cfg.misalign and rng.random() < cfg.misalign and shape[0] > 1:
        cut = int(rng.integers(1, shape[0]))
        dy, dx = (int(v) for v in rng.integers(-cfg.misalign_max, cfg.misalign_max + 1, 2))
        arrays = [_shift_below(a, cut, dy, dx) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def _mode(a: np.ndarray) -> str:
    return "bilinear" if a.dtype.kind == "f" else "nearest"


def _as_channels(a: np.ndarray):
    """``(z, y, x)`` as a MONAI 2D image with z as the channel axis (one field for all sections)."""
    import torch

    return torch.as_tensor(np.ascontiguousarray(a).astype(np.float32, copy=False))


def _back(t, like: np.ndarray) -> np.ndarray:
    arr = np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t)
    if like.dtype.kind in "iub":
        arr = np.rint(arr)
    return arr.astype(like.dtype, copy=False)


def _affine(a: np.ndarray, shift: np.ndarray, zoom: np.ndarray) -> np.ndarray:
    from monai.transforms import Affine

    t = Affine(translate_params=[float(s) for s in shift], scale_params=[float(z) for z in zoom],
               padding_mode="reflection", image_only=True)
    return _back(t(_as_channels(a), mode=_mode(a)), a)


def _elastic(arrays: list[np.ndarray], seed: int, cfg: AugmentConfig) -> list[np.ndarray]:
    # the dictionary version draws one deformation for all keys (the array version re-draws
    # its control points on every call)
    from monai.transforms import Rand2DElasticd

    keys = [f"a{i}" for i in range(len(arrays))]
    t = Rand2DElasticd(keys=keys, spacing=cfg.elastic_spacing, magnitude_range=tuple(cfg.elastic_magnitude),
                       prob=1.0, padding_mode="reflection", mode=[_mode(a) for a in arrays])
    t.set_random_state(seed=seed)
    out = t({k: _as_channels(a) for k, a in zip(keys, arrays)})
    return [_back(out[k], a) for k, a in zip(keys, arrays)]


def _shift_below(a: np.ndarray, cut: int, dy: int, dx: int) -> np.ndarray:
    out = np.array(a, copy=True)
    out[cut:] = np.roll(a[cut:], (dy, dx), axis=(1, 2))
    return out


# -- intensity ---------------------------------------------------------------------------------
def random_intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, gamma, blur and noise (each with its probability), in that order."""
    img = np.asarray(image, dtype=np.float32)
    if cfg.brightness and rng.random() < cfg.brightness:
        img = img + np.float32(rng.uniform(-cfg.brightness_range, cfg.brightness_range))
    if cfg.contrast and rng.random() < cfg.contrast:
        mean = img.mean()
        img = (img - mean) * np.float32(rng.uniform(1 - cfg.contrast_range, 1 + cfg.contrast_range)) + mean
    if cfg.gamma and rng.random() < cfg.gamma:
        from monai.transforms import AdjustContrast

        gamma = float(rng.uniform(*cfg.gamma_range))
        img = _back(AdjustContrast(gamma=gamma)(_as_channels(img)), img)
    if cfg.blur and rng.random() < cfg.blur:
        from monai.transforms import GaussianSmooth

        sigma = float(rng.uniform(*cfg.blur_sigma))
        img = _back(GaussianSmooth(sigma=(sigma, sigma))(_as_channels(img)), img)
    if cfg.noise and rng.random() < cfg.noise:
        std = float(rng.uniform(*cfg.noise_std))
        img = img + rng.normal(0.0, std, img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False)


# -- defects and masking -----------------------------------------------------------------------
def missing_sections(image: np.ndarray, rng: np.random.Generator, max_missing: int = 1) -> np.ndarray:
    """Blank 1..``max_missing`` random sections (set to the volume mean)."""
    img = np.array(image, dtype=np.float32, copy=True)
    if img.shape[0] < 2:
        return img
    n = int(rng.integers(1, max(1, min(max_missing, img.shape[0] - 1)) + 1))
    idx = rng.choice(img.shape[0], size=n, replace=False)
    img[idx] = img.mean()
    return img


def cutout(
    image: np.ndarray,
    rng: np.random.Generator,
    count: tuple[int, int] = (1, 32),
    size: tuple[int, int] = (8, 24),
    fill: float | None = 0.0,
) -> np.ndarray:
    """Blank ``count`` random squares (side from ``size``) through all sections.

    ``fill=None`` fills with random values from the image's range instead of a constant.
    """
    img = np.array(image, dtype=np.float32, copy=True)
    _, h, w = img.shape
    n = int(rng.integers(count[0], count[1] + 1))
    for _ in range(n):
        s = int(rng.integers(size[0], size[1] + 1))
        sy, sx = min(s, h), min(s, w)
        y0, x0 = int(rng.integers(0, h - sy + 1)), int(rng.integers(0, w - sx + 1))
        region = img[:, y0 : y0 + sy, x0 : x0 + sx]
        region[...] = fill if fill is not None else rng.uniform(img.min(), img.max(), region.shape)
    return img


def block_mask(
    image: np.ndarray, rng: np.random.Generator, fraction: tuple[float, float] = (0.25, 0.5),
    fill: float = 0.0,
) -> np.ndarray:
    """Mask one large block whose edges are a random ``fraction`` of the volume's edges."""
    img = np.array(image, dtype=np.float32, copy=True)
    sl = []
    for n in img.shape:
        e = max(1, int(round(n * rng.uniform(*fraction))))
        a = int(rng.integers(0, n - e + 1))
        sl.append(slice(a, a + e))
    img[tuple(sl)] = fill
    return img


def splice(image: np.ndarray, rng: np.random.Generator, fraction: tuple[float, float] = (0.2, 0.4)) -> np.ndarray:
    """Paste a block copied from another random place of the same volume."""
    img = np.array(image, dtype=np.float32, copy=True)
    size = [max(1, int(round(n * rng.uniform(*fraction)))) for n in img.shape]
    src = tuple(slice(a, a + e) for a, e in ((int(rng.integers(0, n - e + 1)), e) for n, e in zip(img.shape, size)))
    dst = tuple(slice(a, a + e) for a, e in ((int(rng.integers(0, n - e + 1)), e) for n, e in zip(img.shape, size)))
    img[dst] = image[src]
    return img

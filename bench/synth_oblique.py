"""A near-isotropic synthetic stand-in whose neurites run along the volume's diagonal.

The synthetic sample (:func:`napari_emseg.data.synthetic.make_synthetic_em`) draws neurites, and
the mitochondria in them, mostly along z: its xy planes cut them across and its xz and yz planes
lengthwise, so the three planes of a FIB-SEM-like volume look unlike each other, which real
tissue (neurites running every way) does not. Here the sample is generated large enough and
turned so that its z axis, along which the neurites run, lies along the diagonal (1, 1, 1) of
the volume returned: xy, xz and yz planes then all cut the neurites at the same slant
(54.7 degrees from their axis) and look alike. The image is resampled linearly, the labels by
nearest neighbour (``scipy.ndimage.affine_transform``).

Used by ``bench/few_slices.py --sets synth-oblique`` (and ``synth-oblique-neurons``).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi


def diagonal_rotation() -> np.ndarray:
    """The rotation (``(z, y, x)`` coordinates) that takes the z axis to ``(1, 1, 1) / sqrt(3)``."""
    ez, d = np.array([1.0, 0.0, 0.0]), np.ones(3) / np.sqrt(3.0)
    axis = np.cross(ez, d)
    axis /= np.linalg.norm(axis)
    angle = np.arccos(float(ez @ d))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)  # Rodrigues


def oblique_synthetic(shape: tuple[int, int, int], seed: int, voxel_size: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """``raw`` (uint8), ``mitochondria`` and ``neurons`` (uint32 ids) and ``membranes`` (bool) of a
    ``shape`` box cut from a larger synthetic sample turned so its neurites run along the box's
    diagonal. ``voxel_size`` must be isotropic (the turn mixes the axes)."""
    from napari_emseg.data.synthetic import make_synthetic_em

    if max(voxel_size) / min(voxel_size) > 1.01:
        raise ValueError(f"an oblique stand-in needs isotropic voxels, got {voxel_size}")
    rot = diagonal_rotation()
    centre_out = (np.array(shape, float) - 1) / 2
    corners = np.array(list(itertools.product(*[(0.0, s - 1.0) for s in shape]))) - centre_out
    src = corners @ rot  # source offsets of the output corners: s = R^T o, as rows
    src_shape = tuple(int(np.ceil(v)) + 4 for v in (src.max(0) - src.min(0)))
    # one mitochondrion of ~65 slices per neurite would leave the long source sparse: as many per
    # neurite as keep the sample's density (0.6 per 64 slices, its default)
    em = make_synthetic_em(src_shape, seed=seed, voxel_size=voxel_size, mito_fraction=0.6 * src_shape[0] / 64)
    centre_src = (np.array(src_shape, float) - 1) / 2
    matrix, offset = rot.T, centre_src - rot.T @ centre_out

    def turn(vol: np.ndarray, order: int) -> np.ndarray:
        return ndi.affine_transform(vol, matrix, offset=offset, output_shape=shape, order=order, mode="nearest")

    return {"raw": turn(em.raw, 1), "mitochondria": turn(em.mitochondria, 0), "neurons": turn(em.neurons, 0),
            "membranes": turn(em.membranes.astype(np.uint8), 0).astype(bool)}

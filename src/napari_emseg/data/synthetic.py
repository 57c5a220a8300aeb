"""A deterministic generator of EM-like volumes with neuron and mitochondria ground truth.

The volume imitates serial-section EM of neuropil: densely packed neurites run through the
stack at varied angles (a power diagram of moving seeds, with a smooth domain warp so membranes
curve), separated by dark membranes; some neurites hold dark, elongated, textured mitochondria
(double outer membrane, cristae); cytoplasm is light grey with vesicle-like specks; z is coarser
than x/y; the image is blurred, unevenly lit, varies in contrast from section to section and
carries noise. With near-isotropic voxels (z under :data:`ISOTROPIC` times y/x) it imitates
FIB-SEM instead: membranes, mitochondrion membranes, cristae, texture, vesicles and blur are
3D, so the xz and yz planes look like the xy planes, and slices vary little in contrast.
Every random choice comes from one seeded generator, so the same arguments give the same
volume, bit for bit.

>>> em = make_synthetic_em(shape=(8, 64, 64), seed=0)
>>> em.raw.dtype, em.raw.shape, int(em.neurons.max()) > 3
(dtype('uint8'), (8, 64, 64), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SyntheticEM", "make_synthetic_em"]

#: z voxel size under this many times the in-plane one: rendered as an isotropic volume
ISOTROPIC = 1.5


@dataclass(frozen=True)
class SyntheticEM:
    """Raw image and ground truth of a synthetic EM volume.

    Attributes
    ----------
    raw
        ``uint8`` image ``(z, y, x)``.
    neurons
        ``uint32`` neuron instance ids, dense (every voxel belongs to one neurite, membranes to
        the neurite on their side); each id is one 6-connected object.
    mitochondria
        ``uint32`` mitochondrion instance ids, 0 = not a mitochondrion.
    membranes
        ``bool`` membrane voxels as drawn in the image.
    voxel_size
        ``(z, y, x)`` in nm.
    """

    raw: np.ndarray
    neurons: np.ndarray
    mitochondria: np.ndarray
    membranes: np.ndarray
    voxel_size: tuple[float, float, float]


def make_synthetic_em(
    shape: tuple[int, int, int] = (32, 256, 256),
    *,
    seed: int = 0,
    voxel_size: tuple[float, float, float] = (40.0, 8.0, 8.0),
    neurite_diameter_nm: float = 400.0,
    mito_fraction: float = 0.6,
    membrane_nm: float = 20.0,
    noise: float = 0.06,
    blur_px: float = 0.9,
) -> SyntheticEM:
    """Generate a synthetic EM volume.

    Parameters
    ----------
    shape
        ``(z, y, x)`` in voxels, from tiny test volumes (``(4, 32, 32)``) to ``(256, 256, 256)``.
    seed
        Seed of the random generator; equal arguments give identical volumes.
    voxel_size
        ``(z, y, x)`` in nm; the default is anisotropic (40 nm sections, 8 nm pixels).
    neurite_diameter_nm
        Typical neurite diameter; sets how densely the neuropil is packed.
    mito_fraction
        Fraction of neurites that carry a mitochondrion; above 1, mitochondria per neurite on
        average (for volumes much longer along z than a mitochondrion).
    membrane_nm
        Membrane thickness as drawn.
    noise
        Standard deviation of the additive noise, relative to the intensity range.
    blur_px
        In-plane Gaussian blur of the imaging system, in pixels.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 16:
        raise ValueError(f"shape must be (z, y, x) with y, x >= 16, got {shape}")
    rng = np.random.default_rng(seed)
    vz, vy, vx = (float(v) for v in voxel_size)
    px = (vy + vx) / 2.0
    spacing = neurite_diameter_nm / px  # mean seed spacing in pixels

    tubes = _make_tubes(rng, shape, spacing, vz / px)
    warp = _smooth_noise(rng, (2, *shape), scale=(max(2.0, 200.0 / vz), spacing * 0.45, spacing * 0.45))
    warp *= spacing * 0.45

    neurons = np.zeros(shape, np.uint32)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    for z in range(shape[0]):
        neurons[z] = _power_diagram_slice(tubes, z, yy + warp[0, z], xx + warp[1, z])
    neurons = _connected_ids(neurons)

    aniso = vz / px
    iso = aniso < ISOTROPIC
    membranes, dist = _membranes(neurons, max(1.0, membrane_nm / px), aniso if iso else None)
    mito = _place_mitochondria(rng, neurons, dist, tubes, spacing, aniso, mito_fraction)
    raw = _render(rng, neurons, membranes, mito, dist, noise=noise, blur_px=blur_px, spacing=spacing,
                  aniso=aniso if iso else None)
    return SyntheticEM(raw, neurons, mito, membranes, (vz, vy, vx))


# ---------------------------------------------------------------------------------------------
@dataclass
class _Tubes:
    p0: np.ndarray  # (n, 2) position at z = 0 (px)
    v: np.ndarray  # (n, 2) drift per slice (px)
    amp: np.ndarray  # (n, 2) wiggle amplitude (px)
    freq: np.ndarray  # (n, 2) wiggle frequency (rad per slice)
    phase: np.ndarray  # (n, 2)
    weight: np.ndarray  # (n,) power-diagram weight (px^2): bigger -> wider neurite
    z0: np.ndarray  # (n,) first slice alive
    z1: np.ndarray  # (n,) last slice alive
    radius: np.ndarray  # (n,) nominal radius (px)

    def at(self, z: float) -> np.ndarray:
        return self.p0 + self.v * z + self.amp * np.sin(self.freq * z + self.phase)


def _make_tubes(rng: np.random.Generator, shape: tuple[int, ...], spacing: float, aniso: float) -> _Tubes:
    nz, ny, nx = shape
    # angle from the z axis: most neurites run through the stack, some obliquely
    theta = np.deg2rad(np.clip(np.abs(rng.normal(0.0, 28.0, 100000)), 0, 62))
    drift_max = float(np.tan(theta.max()) * aniso * nz)
    margin = min(drift_max, 2.5 * max(ny, nx)) + 2 * spacing
    area = (ny + 2 * margin) * (nx + 2 * margin)
    n = max(8, int(area / (0.866 * spacing**2)))
    # roughly even packing: best of several candidates farthest from the placed seeds
    pts = _spread_points(rng, n, (-margin, ny + margin), (-margin, nx + margin), spacing)
    n = len(pts)
    th = theta[:n]
    phi = rng.uniform(0, 2 * np.pi, n)
    speed = np.tan(th) * aniso  # px per slice
    v = np.stack([np.sin(phi), np.cos(phi)], 1) * speed[:, None]
    zc = nz / 2.0
    p0 = pts - v * zc
    radius = spacing / 2 * rng.lognormal(0.0, 0.35, n)
    weight = radius**2 - (spacing / 2) ** 2
    amp = rng.uniform(0, 0.25, (n, 2)) * spacing
    freq = rng.uniform(0.02, 0.12, (n, 2)) * aniso / 5.0
    phase = rng.uniform(0, 2 * np.pi, (n, 2))
    z0 = np.full(n, -1.0)
    z1 = np.full(n, nz + 1.0)
    ends = rng.random(n) < 0.15  # some neurites end (or begin) inside the stack
    mid = rng.uniform(0, nz, n)
    begin = rng.random(n) < 0.5
    z0[ends & begin] = mid[ends & begin]
    z1[ends & ~begin] = mid[ends & ~begin]
    return _Tubes(p0, v, amp, freq, phase, weight, z0, z1, radius)


def _spread_points(rng, n, yr, xr, spacing):
    """About evenly spread points: each the best of 8 random candidates (farthest from the rest)."""
    from scipy.spatial import cKDTree

    pts = np.empty((n, 2))
    pts[0] = rng.uniform(*yr), rng.uniform(*xr)
    tree, built = None, 0
    for i in range(1, n):
        cand = np.stack([rng.uniform(*yr, 8), rng.uniform(*xr, 8)], 1)
        d = tree.query(cand)[0] if tree is not None else np.full(8, np.inf)
        if i > built:
            near = np.linalg.norm(cand[:, None] - pts[None, built:i], axis=2).min(1)
            d = np.minimum(d, near)
        pts[i] = cand[int(np.argmax(d))]
        if i + 1 - built >= 64:
            tree, built = cKDTree(pts[: i + 1]), i + 1
    return pts


def _power_diagram_slice(t: _Tubes, z: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    alive = np.flatnonzero((t.z0 <= z) & (t.z1 >= z))
    centres = t.at(float(z))[alive]
    tree = cKDTree(centres)
    q = np.stack([yy.ravel(), xx.ravel()], 1)
    k = min(8, len(alive))
    d, idx = tree.query(q, k=k)
    d, idx = d.reshape(len(q), k), idx.reshape(len(q), k)
    power = d**2 - t.weight[alive][idx]
    best = idx[np.arange(len(q)), np.argmin(power, 1)]
    return (alive[best] + 1).reshape(yy.shape).astype(np.uint32)


def _connected_ids(labels: np.ndarray) -> np.ndarray:
    """Split ids into 6-connected pieces and number them 1..n."""
    from skimage.measure import label

    return label(labels, background=0, connectivity=1).astype(np.uint32)


def _membranes(neurons: np.ndarray, thickness: float, aniso: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Membranes of the given thickness and the distance (px) to the nearest boundary: in-plane
    (sections), or in 3D when ``aniso`` (z over in-plane voxel size) is given (isotropic volumes)."""
    boundary = np.zeros(neurons.shape, bool)
    boundary[:, 1:, :] |= neurons[:, 1:, :] != neurons[:, :-1, :]
    boundary[:, :, 1:] |= neurons[:, :, 1:] != neurons[:, :, :-1]
    if aniso is not None:
        boundary[1:] |= neurons[1:] != neurons[:-1]
        dist = ndi.distance_transform_edt(~boundary, sampling=(aniso, 1.0, 1.0)).astype(np.float32) \
            if boundary.any() else np.full(neurons.shape, 1e3, np.float32)
        return dist < thickness / 2.0 + 0.5, dist
    dist = np.empty(neurons.shape, np.float32)
    for z in range(neurons.shape[0]):
        dist[z] = ndi.distance_transform_edt(~boundary[z]) if boundary[z].any() else 1e3
    return dist < thickness / 2.0 + 0.5, dist


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: tuple[float, ...]) -> np.ndarray:
    """Gaussian-correlated noise scaled to about [-1, 1] (filtered in Fourier space, periodic).

    ``scale`` is the correlation length per spatial axis (the last three axes), in voxels; any
    leading axes get independent fields.
    """
    spatial = shape[-3:]
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in spatial[:-1]], np.fft.rfftfreq(spatial[-1]), indexing="ij")
    gain = np.exp(-0.5 * sum((2 * np.pi * f * sc) ** 2 for f, sc in zip(freqs, scale))).astype(np.float32)
    out = np.empty(shape, np.float32)
    for idx in np.ndindex(*shape[:-3]):
        white = rng.standard_normal(spatial, dtype=np.float32)
        field = np.fft.irfftn(np.fft.rfftn(white) * gain, s=spatial, axes=(0, 1, 2)).astype(np.float32)
        out[idx] = field / (2.5 * field.std() + 1e-12)
    return np.clip(out, -1, 1)


def _place_mitochondria(rng, neurons, dist, tubes: _Tubes, spacing, aniso, fraction) -> np.ndarray:
    """Ellipsoidal capsules inside neurites: most run along the neurite, some lie in-plane."""
    from skimage.measure import label

    nz = neurons.shape[0]
    mito = np.zeros(neurons.shape, np.uint32)
    boxes = ndi.find_objects(neurons)
    ids = np.array([i + 1 for i, b in enumerate(boxes) if b is not None])
    # a fraction above 1 places several mitochondria in some neurites (long volumes)
    chosen = rng.permutation(np.tile(ids, max(1, int(np.ceil(fraction)))))[: int(round(fraction * len(ids)))]
    next_id = 1
    for nid in np.sort(chosen):
        box = boxes[nid - 1]
        cell = neurons[box] == nid
        if cell.sum() < 40:
            continue
        zc = np.flatnonzero(cell.any(axis=(1, 2))) + box[0].start
        if len(zc) >= 3 and rng.random() < 0.75:
            length = rng.uniform(6, 20) * 5.0 / aniso  # ~150-600 nm at 40 nm sections
            za = rng.uniform(zc.min() - length / 2, zc.max())
            zb = za + length
        else:  # lying in-plane: short in z, elongated in x/y
            za = rng.choice(zc) - rng.uniform(0, 1.5)
            zb = za + rng.uniform(1.0, 3.0)
        r = spacing * rng.uniform(0.24, 0.4)
        elong = rng.uniform(1.0, 2.2)
        ang = rng.uniform(0, np.pi)
        shift = rng.normal(0, 0.12 * spacing, 2)
        yy, xx = np.mgrid[box[1], box[2]].astype(np.float32)
        mask = np.zeros(cell.shape, bool)
        for z in range(max(int(np.floor(za)), box[0].start), min(int(np.ceil(zb)) + 1, box[0].stop, nz)):
            zi = z - box[0].start
            inside = cell[zi]
            t = min(z - za, zb - z) / max(1.0, (zb - za) / 2)
            if not inside.any() or t <= 0:
                continue
            taper = np.sqrt(min(1.0, t * 1.6))  # round the capsule's ends
            cy = yy[inside].mean() + shift[0]
            cx = xx[inside].mean() + shift[1]
            u = (yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)
            w = -(yy - cy) * np.sin(ang) + (xx - cx) * np.cos(ang)
            ell = (u / (r * elong * taper)) ** 2 + (w / (r * taper)) ** 2 <= 1.0
            mask[zi] = ell & inside & (dist[box][zi] > 2.5)
        if mask.sum() < 12:
            continue
        cc = label(mask, connectivity=1)
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        keep = (cc == int(np.argmax(sizes))) & (mito[box] == 0)  # never over an earlier one of the neurite
        if keep.sum() >= 12:
            mito[box][keep] = next_id
            next_id += 1
    return mito


def _render(rng, neurons, membranes, mito, dist, *, noise, blur_px, spacing, aniso=None) -> np.ndarray:
    """The EM image: section by section, or (``aniso`` given) as an isotropic volume whose xz
    and yz planes look like its xy planes (3D texture, mitochondrion membranes and blur)."""
    nz, ny, nx = neurons.shape
    iso = aniso is not None
    img = np.empty(neurons.shape, np.float32)
    cell_tone = rng.normal(0.0, 0.04, int(neurons.max()) + 1).astype(np.float32)
    blotch = _smooth_noise(rng, (nz, ny, nx), scale=(4.0 / aniso, 4.0, 4.0) if iso else (0.7, 4.0, 4.0))
    grain = _smooth_noise(rng, (nz, ny, nx), scale=(1.0 / aniso, 1.0, 1.0) if iso else (0.5, 1.0, 1.0))
    vesicles = rng.random(neurons.shape, dtype=np.float32) < (0.0035 / 5 if iso else 0.0035)
    if iso:  # vesicles are balls
        r = int(np.ceil(2.1 / aniso))
        zz, yv, xv = np.mgrid[-r:r + 1, -2:3, -2:3]
        disk = np.sqrt((zz * aniso) ** 2 + yv**2 + xv**2) <= 2.1
    else:
        disk = np.zeros((1, 5, 5), bool)
        disk[0] = np.hypot(*np.mgrid[-2:3, -2:3]) <= 2.1
    vesicles = ndi.binary_dilation(vesicles, structure=disk)
    d_in3 = ndi.distance_transform_edt(mito > 0, sampling=(aniso, 1.0, 1.0)).astype(np.float32) if iso else None
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    for z in range(nz):
        m = mito[z] > 0
        img[z] = 0.70 + cell_tone[neurons[z]] + 0.05 * blotch[z] + 0.03 * grain[z]
        img[z][vesicles[z] & ~m] -= 0.2
        if m.any():
            d_in = d_in3[z] if iso else ndi.distance_transform_edt(m)
            ang = (mito[z].astype(np.float32) * 1.7) % np.pi  # one cristae direction per mito
            proj = yy * np.cos(ang) + xx * np.sin(ang) + 2.5 * blotch[z]
            if iso:  # cristae are sheets tilted out of the plane too
                tilt = (mito[z].astype(np.float32) * 0.9) % 1.2 - 0.6
                proj = proj + z * aniso * tilt
            cristae = (0.5 + 0.5 * np.sin(proj * 2 * np.pi / 7.0)) ** 3
            body = 0.44 - 0.16 * cristae + 0.03 * grain[z]
            img[z][m] = body[m]
            img[z][m & (d_in <= 1.6)] = 0.24  # double outer membrane
        # membranes: dark core with soft shoulders (oblique membranes look wider)
        shoulder = np.clip(1.0 - (dist[z] - 0.5) / 3.5, 0.0, 1.0)
        img[z] -= 0.22 * shoulder * (~m)
        img[z][membranes[z]] = np.minimum(img[z][membranes[z]], 0.2 + 0.03 * grain[z][membranes[z]])
    # imaging: blur, uneven illumination, section-to-section contrast jitter, noise
    img = ndi.gaussian_filter(img, sigma=(blur_px / aniso if iso else 0, blur_px, blur_px))
    light = _smooth_noise(rng, (nz, ny, nx), scale=(max(2.0, nz / 3), ny / 3.0, nx / 3.0))
    img *= 1.0 + 0.12 * light
    jitter = 0.25 if iso else 1.0  # FIB-SEM slices vary far less than cut sections
    gain = rng.normal(1.0, 0.04 * jitter, (nz, 1, 1)).astype(np.float32)
    offset = rng.normal(0.0, 0.025 * jitter, (nz, 1, 1)).astype(np.float32)
    img = img * gain + offset
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)

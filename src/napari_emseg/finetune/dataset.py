"""Training patches around what was painted, augmented, with targets built after augmentation.

Geometric augmentation acts on the *labels* (nearest neighbour) and the annotation mask, and the
targets are computed afterwards: flipping or rotating an affinity map would need its channels
remapped, recomputing is exact. Batches are a pure function of ``(seed, step)``, so a resumed
fine-tune sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.augment import AugmentConfig, augment
from .annotations import Annotations
from .targets import TargetKind, Targets, build_targets


class AnnotatedPatches:
    """Random patches that overlap annotated voxels, as tensors for a masked loss.

    Parameters
    ----------
    image
        Normalised float32 image of the annotation crop ``(z, y, x)``.
    ann
        The annotations of the same crop (``ann.labels``, ``ann.mask``).
    kind
        Target kind (see :mod:`.targets`).
    patch
        Patch shape ``(z, y, x)``; ``z == 1`` for 2D networks.
    batch_size, seed
        Batch size and the seed that, with the step, decides every draw.
    augmentation
        Augmentations; ``None`` for none (validation).
    spatial_dims
        2 gives ``(B, C, Y, X)`` tensors, 3 gives ``(B, C, Z, Y, X)``.
    permute_planes
        Also show the painted plane along the other axes (near-isotropic data): a 3D network's
        cubic patches are transposed; a 2D network gets a third of its patches as planes cut
        across the painted z-slices (xz or yz; see :meth:`cross_sample`).
    target_kwargs
        Passed to the target builder (offsets, n_classes, ...).
    """

    def __init__(
        self,
        image: np.ndarray,
        ann: Annotations,
        kind: TargetKind,
        patch: tuple[int, int, int],
        *,
        batch_size: int = 2,
        seed: int = 0,
        augmentation: AugmentConfig | None = None,
        spatial_dims: int = 3,
        permute_planes: bool = False,
        target_kwargs: dict | None = None,
    ) -> None:
        if image.shape != ann.labels.shape:
            raise ValueError(f"image crop {image.shape} and labels crop {ann.labels.shape} differ")
        self.image, self.ann, self.kind = image, ann, kind
        self.patch = tuple(int(p) for p in patch)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.augmentation = augmentation
        self.spatial_dims = spatial_dims
        self.permute_planes = permute_planes
        self.target_kwargs = dict(target_kwargs or {})
        # building the targets of the whole crop once checks the annotations up front
        self.channel_names = build_targets(ann, kind, **self.target_kwargs).channel_names
        self.centres = _subsample(np.argwhere(ann.mask), seed)
        # half of the patches are centred on painted objects: sparse objects (mitochondria) are
        # otherwise missing from most patches and the network learns "nothing here"
        objects = ann.mask & (ann.labels != 0)
        if ann.mode == "scribbles":
            objects &= ann.labels != ann.background_label
        self.object_centres = _subsample(np.argwhere(objects), seed)
        self.cross = None
        if permute_planes and spatial_dims == 2 and self.patch[1] == self.patch[2] and kind != "affinities":
            self.cross = CrossPlanes.build(ann, kind, self.target_kwargs)

    def __call__(self, start_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches for steps ``start_step, start_step + 1, ...`` (the trainer's resumable form)."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        items = [self.sample(rng) for _ in range(self.batch_size)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    def sample(self, rng: np.random.Generator, centre: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One augmented patch: ``image (1, *patch)``, ``target``, ``mask`` as float32.

        Without ``centre`` the patch is centred near a random annotated voxel; with it, exactly there.
        """
        if centre is None:
            pool = self.object_centres if len(self.object_centres) and rng.random() < 0.5 else self.centres
            centre = pool[rng.integers(len(pool))]
            jitter = True
            if self.cross is not None and rng.random() < CROSS_FRACTION:
                return self.cross_sample(rng, centre)
        else:
            jitter = False
        start = np.asarray(centre)
        start = start - np.array(self.patch) // 2
        if jitter:
            start = start + np.array([rng.integers(-(p // 4), p // 4 + 1) for p in self.patch])
        img, lab, msk = (crop_padded(a, start, self.patch) for a in (self.image, self.ann.labels, self.ann.mask))
        if self.permute_planes and rng.random() < 2 / 3 and len(set(self.patch)) == 1:
            order = (1, 0, 2) if rng.random() < 0.5 else (2, 1, 0)
            img, lab, msk = (np.ascontiguousarray(a.transpose(order)) for a in (img, lab, msk))
        if self.augmentation is not None:
            img, (lab, msk) = augment(img, [lab, msk.astype(np.uint8)], rng, self.augmentation)
        targets = self.targets(lab, msk.astype(bool))
        x = img[None].astype(np.float32)
        t, m = targets.target, targets.mask
        if self.spatial_dims == 2:
            x, t, m = x[:, 0], t[:, 0], m[:, 0]
        return {"image": x, "target": t.astype(np.float32), "mask": m.astype(np.float32)}

    def cross_sample(self, rng: np.random.Generator, centre: np.ndarray) -> dict[str, np.ndarray]:
        """A plane cut across the painted z-slices through ``centre``: xz (at the centre's y) or
        yz, ``patch[1]`` voxels along z, rows reflected at the crop's edges.

        It is labelled along the rows where it crosses a painted slice, with the targets of that
        slice (contours and distances are shapes in the painted plane, so they are computed there,
        not along the row). Its mask is scaled up towards the weight of a painted patch (at most
        :data:`CROSS_WEIGHT_CAP` a voxel), so the few rows are not drowned by the painted patches.
        """
        cross, (n_rows, n_cols) = self.cross, self.patch[1:]
        keep = 1 if rng.random() < 0.5 else 2  # the axis the plane is cut at: y gives xz, x gives yz
        free = 3 - keep
        jit = [int(rng.integers(-(n // 4), n // 4 + 1)) for n in (n_rows, n_cols)]
        rows, rows_in = _reflect(np.arange(n_rows) + int(centre[0]) - n_rows // 2 + jit[0], self.image.shape[0])
        cols, cols_in = _reflect(np.arange(n_cols) + int(centre[free]) - n_cols // 2 + jit[1], self.image.shape[free])
        at = int(centre[keep])
        img = self.image[rows[:, None], at, cols] if keep == 1 else self.image[rows[:, None], cols, at]
        k = cross.row_of[rows]
        known = (k >= 0) & rows_in
        c = cross.target.shape[0]
        target, mask = np.zeros((c, n_rows, n_cols), np.float32), np.zeros((c, n_rows, n_cols), np.float32)
        if known.any():
            def line(a: np.ndarray) -> np.ndarray:  # (C, rows, cols): the cut line of each painted slice
                return (a[:, :, at, :] if keep == 1 else a[:, :, :, at])[:, k[known]][:, :, cols]

            target[:, known] = line(cross.target)
            mask[:, known] = line(cross.mask) * cols_in
            mask *= min(CROSS_WEIGHT_CAP, n_rows * n_cols / max(float(mask[0].sum()), 1.0))
        img = img.astype(np.float32)
        if self.augmentation is not None:  # the plane and each channel as one-section volumes, alike
            ints = self.kind == "semantic"  # class ids: nearest neighbour
            chans = [(t.astype(np.int64) if ints else t)[None] for t in target] + [m[None] for m in mask]
            img3, out = augment(img[None], chans, rng, self.augmentation)
            img = img3[0]
            target = np.stack([a[0] for a in out[:c]]).astype(np.float32)
            mask = np.stack([a[0] for a in out[c:]]).astype(np.float32)
        return {"image": img[None], "target": target, "mask": mask}

    def targets(self, labels: np.ndarray, mask: np.ndarray) -> Targets:
        """Targets for a (transformed) patch: the painted axis is re-read from the mask."""
        patch_ann = replace(self.ann, labels=labels, mask=mask, axis=painted_axis(mask, self.ann.axis))
        if not mask.any():
            n = 1 if self.kind == "semantic" else len(self.channel_names)
            zeros = np.zeros((n, *labels.shape), np.float32)
            return Targets(zeros, zeros.copy(), self.kind, self.channel_names)
        return build_targets(patch_ann, self.kind, lenient=True, **self.target_kwargs)


#: the share of a 2D network's patches cut across the painted slices (``permute_planes``)
CROSS_FRACTION = 1 / 3
#: the largest weight a labelled voxel of a cross plane gets (a plane crossing one painted slice
#: has one labelled row: 192 voxels against a painted patch's 192 x 192)
CROSS_WEIGHT_CAP = 32.0


@dataclass(frozen=True)
class CrossPlanes:
    """The targets of each painted z-slice, for planes cut across them: ``target`` and ``mask``
    ``(C, n, Y, X)`` for the ``n`` slices that hold annotations; ``row_of[z]`` is a slice's
    index there, -1 for the others."""

    target: np.ndarray
    mask: np.ndarray
    row_of: np.ndarray

    @classmethod
    def build(cls, ann: Annotations, kind: TargetKind, target_kwargs: dict) -> CrossPlanes | None:
        zs = np.flatnonzero(ann.mask.any(axis=(1, 2)))
        if ann.axis not in (0, None) or not len(zs) or len(zs) > MAX_CROSS_SLICES:
            return None
        parts = [build_targets(replace(ann, labels=ann.labels[z:z + 1], mask=ann.mask[z:z + 1], axis=0),
                               kind, lenient=True, **target_kwargs) for z in zs]
        row_of = np.full(ann.labels.shape[0], -1, np.int64)
        row_of[zs] = np.arange(len(zs))
        return cls(np.concatenate([p.target for p in parts], 1), np.concatenate([p.mask for p in parts], 1), row_of)


#: more painted z-slices than this (scribbles through a volume) and no cross planes are cut
MAX_CROSS_SLICES = 64


def _reflect(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``index`` mirrored into ``[0, n)`` (edge voxels repeated), and where it was inside."""
    inside = (index >= 0) & (index < n)
    period = 2 * n
    m = np.mod(index, period)
    return np.where(m < n, m, period - 1 - m), inside


def _subsample(coords: np.ndarray, seed: int, limit: int = 500_000) -> np.ndarray:
    """At most ``limit`` rows of ``coords`` (enough centres to draw from, bounded memory)."""
    if len(coords) > limit:
        coords = coords[np.random.default_rng(seed).choice(len(coords), limit, replace=False)]
    return coords


def painted_axis(mask: np.ndarray, hint: int | None) -> int | None:
    """The axis along which ``mask`` is made of whole slices (after flips/rotations), if any."""
    if hint is None:
        return None
    for ax in [hint] + [a for a in range(3) if a != hint]:
        others = tuple(a for a in range(3) if a != ax)
        if np.array_equal(mask.any(axis=others), mask.all(axis=others)) and not mask.all():
            return ax
    return hint


def crop_padded(a: np.ndarray, start: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a[start:start+shape]``, zero-padded where the window leaves the array."""
    out = np.zeros(shape, a.dtype)
    src, dst = [], []
    for s, n, size in zip(start, shape, a.shape):
        lo, hi = max(0, int(s)), min(size, int(s) + n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = a[tuple(src)]
    return out

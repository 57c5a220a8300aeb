"""Semantic maps: the most probable class per voxel, then objects per class.

The class map is an arg-max over the softmax channels, computed one channel at a time in the
stored type (uint8 maps stay uint8). Objects are connected components of each foreground class
(class 0 is background), with components smaller than ``min_size`` voxels dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from ..config import Config
from ..progress import Job, Progress, Stopwatch, drain
from .cleanup import apply_lut, consecutive_lut, label_sizes
from .maps import check_map, read_channel
from .memory import check_memory
from .sections import centre, sections_apart

__all__ = ["SemanticConfig", "class_map", "semantic_job", "segment_semantic"]


@dataclass(frozen=True)
class SemanticConfig(Config):
    """Objects from a semantic (softmax) map.

    Attributes
    ----------
    output
        ``"instances"``: one label per connected object of every foreground class (ids unique
        across classes, consecutive); ``"classes"``: the class map itself, with objects under
        ``min_size`` set to 0.
    connectivity
        1 = faces (6-connected in 3D), 3 = faces, edges and corners (26-connected).
    mode
        ``"3d"``: components span sections (not from one separate image of a stack into the
        next: :func:`~.sections.sections_apart`); ``"2d"``: components per section.
    min_size
        Components smaller than this (voxels) become background.
    """

    output: Literal["instances", "classes"] = "instances"
    connectivity: int = 1
    mode: Literal["2d", "3d"] = "3d"
    min_size: int = 0


def class_map(probs: Any) -> np.ndarray:
    """uint8 (uint16 beyond 255 classes) arg-max over the channels of ``(C, Z, Y, X)`` probabilities."""
    shape = check_map(probs, None, "semantic")
    best = np.array(read_channel(probs, 0), copy=True)  # updated in place below
    classes = np.zeros(shape[1:], np.uint8 if shape[0] <= 256 else np.uint16)
    for c in range(1, shape[0]):
        ch = read_channel(probs, c)
        better = ch > best
        best[better] = ch[better]
        classes[better] = c
    return classes


def semantic_job(probs: Any, config: SemanticConfig = SemanticConfig()) -> Job[np.ndarray]:
    """Instance labels (uint32) or a size-filtered class map from a semantic map, with progress."""
    shape = check_map(probs, None, "semantic")
    check_memory(shape[1:], f"semantic/{config.mode}", extra_per_voxel=2 * np.dtype(probs.dtype).itemsize,
                 what="objects from a semantic map")
    watch = Stopwatch()
    yield Progress(0, shape[0], "classes", "arg-max over classes")
    classes = class_map(probs)
    structure = ndi.generate_binary_structure(3, config.connectivity)
    if config.mode == "2d":
        structure[0] = structure[2] = False
    runs = _runs(classes) if config.mode == "3d" else [(0, shape[1])]
    labels = np.zeros(shape[1:], np.uint32)
    count = 0
    n_classes = shape[0]
    for c in range(1, n_classes):
        n_class = 0
        for z0, z1 in runs:  # components never cross from one separate image into the next
            comp, n = ndi.label(classes[z0:z1] == c, structure=structure)
            if n:
                nz = comp > 0
                labels[z0:z1][nz] = comp[nz] + count
                count += n
                n_class += n
        yield watch.event(c, n_classes - 1, stage="components", message=f"class {c}: {n_class} objects")
    sizes = label_sizes(labels, count + 1)
    lut = np.arange(count + 1, dtype=np.int64)
    if config.min_size > 1:
        lut[sizes < config.min_size] = 0
    if config.output == "classes":
        keep = apply_lut(labels, lut) > 0
        classes[~keep & (classes > 0)] = 0
        return classes
    lut, _ = consecutive_lut(lut, sizes)
    return apply_lut(labels, lut)


#: adjacent sections continue each other when their foreground masks correlate this much more
#: than with the next section turned or rolled (:func:`~.sections.sections_apart`). Ground-truth
#: masks (VNC and FAFB mitochondria, VNC membranes, ISBI cells): 0.13-0.85 above chance between
#: neighbours, at most 0.032 with the sections turned apart
SEMANTIC_MARGIN = 0.07


def _runs(classes: np.ndarray) -> list[tuple[int, int]]:
    """``(z0, z1)`` runs of sections that continue each other (the whole stack unless it holds
    separate images)."""
    nz = int(classes.shape[0])
    win = centre(tuple(classes.shape[1:]))
    apart = sections_apart(lambda z: (classes[(z, *win)] > 0).astype(np.float32), nz, min(classes.shape[1:]),
                           SEMANTIC_MARGIN)
    cuts = [0, *[z + 1 for z in apart], nz]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def segment_semantic(probs: Any, config: SemanticConfig = SemanticConfig()) -> np.ndarray:
    """:func:`semantic_job` run to completion."""
    return drain(semantic_job(probs, config), show=False)

"""Proofreading of instance labels: merge, split from seeds, delete, fill holes; undo; a replayable log.

Every operation reads and writes only the bounding boxes of the objects involved, so it works on
labels of any size held in a writable array-like (numpy, zarr); boxes are found by a blockwise
scan once per object and kept up to date by the edits themselves.

An edit is computed first (:meth:`Proofreader.compute`, read-only: a worker thread may run it)
and then written (:meth:`Proofreader.commit`); it keeps the changed voxels' old and new values,
so :meth:`Proofreader.undo` restores the labels exactly. Each committed edit adds a JSON-able
record to :attr:`Proofreader.log`:

``{"op": "merge", "ids": [7, 9], "points": [[z, y, x], ...]}``   objects 9.. become 7 (the first)
``{"op": "split", "id": 7, "seeds": [[z, y, x], ...], "elevation": "contour", "new_ids": [12]}``
``{"op": "delete", "ids": [...]}``  and  ``{"op": "fill_holes", "ids": [...], "per_slice": false}``

Objects given by ``points`` are looked up at those voxels when a record is replayed
(:func:`replay`), so a log replays on a freshly computed segmentation of the same data; splits
run a seeded watershed inside the object on the predicted maps (:func:`elevation`), the same
maps a rerun predicts again. The log goes into the provenance bundle under ``"proofreading"``
(:func:`bundle_section`) and ``napari-emseg rerun`` replays it (:func:`replay_output_job`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from .errors import EmsegError
from .progress import Job, Progress

__all__ = ["FORMAT", "OPS", "ProofreadError", "Patch", "Edit", "Proofreader", "object_boxes", "max_label",
           "elevation", "edit_job", "replay", "bundle_section"]

FORMAT = "napari-emseg.proofreading/1"
OPS = ("merge", "split", "delete", "fill_holes")
Box = tuple[slice, ...]


class ProofreadError(EmsegError, ValueError):
    """An edit cannot be made: no object at a point, seeds in different objects, too few objects."""


@dataclass
class Patch:
    """The voxels an edit changes inside ``box``: where (``mask``), and their values before and after."""

    box: Box
    mask: np.ndarray
    before: np.ndarray
    after: np.ndarray

    def write(self, labels: Any, undo: bool = False) -> None:
        crop = _read(labels, self.box)
        crop[self.mask] = self.before if undo else self.after
        labels[self.box] = crop


@dataclass
class Edit:
    """One computed edit: its log ``record``, the ``patches`` it writes, the object ids it changes."""

    record: dict[str, Any]
    patches: list[Patch] = field(default_factory=list)
    changed: tuple[int, ...] = ()
    next_id: int = 0  # the next free id after the edit


# -- reading --------------------------------------------------------------------------------------
def _read(labels: Any, box: Box) -> np.ndarray:
    crop = labels[box]
    return np.array(crop.compute() if hasattr(crop, "compute") else crop)


def _blocks(labels: Any) -> Iterable[Box]:
    shape = tuple(int(s) for s in labels.shape)
    chunks = getattr(labels, "chunksize", None) or getattr(labels, "chunks", None)
    if not chunks or isinstance(chunks, bool):  # numpy: slabs of about 16 M voxels along the first axis
        row = int(np.prod(shape[1:])) or 1
        chunks = (max(1, (1 << 24) // row), *shape[1:])
    elif isinstance(chunks[0], tuple):
        chunks = tuple(max(c) for c in chunks)
    for start in product(*[range(0, n, int(c)) for n, c in zip(shape, chunks)]):
        yield tuple(slice(s, min(s + int(c), n)) for s, c, n in zip(start, chunks, shape))


def object_boxes(labels: Any, ids: Iterable[int]) -> dict[int, Box]:
    """Bounding boxes of the objects ``ids`` (absent ones are left out), found block by block."""
    want = np.unique(np.asarray([int(i) for i in ids if int(i) != 0], dtype=np.int64))
    lo: dict[int, np.ndarray] = {}
    hi: dict[int, np.ndarray] = {}
    if want.size == 0:
        return {}
    for block in _blocks(labels):
        part = _read(labels, block)
        hit = np.isin(part, want)
        if not hit.any():
            continue
        start = np.array([s.start for s in block])
        for i in np.unique(part[hit]):
            where = np.nonzero(part == i)
            a = np.array([w.min() for w in where]) + start
            b = np.array([w.max() for w in where]) + start + 1
            i = int(i)
            lo[i] = np.minimum(lo[i], a) if i in lo else a
            hi[i] = np.maximum(hi[i], b) if i in hi else b
    return {i: tuple(slice(int(a), int(b)) for a, b in zip(lo[i], hi[i])) for i in lo}


def max_label(labels: Any) -> int:
    """The largest id in ``labels``, read block by block."""
    return max((int(_read(labels, b).max(initial=0)) for b in _blocks(labels)), default=0)


def _union(boxes: Sequence[Box]) -> Box:
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(len(boxes[0])))


def _point(labels: Any, point: Sequence[float]) -> tuple[int, ...]:
    p = tuple(int(round(float(v))) for v in point)
    if len(p) != len(labels.shape) or not all(0 <= v < n for v, n in zip(p, labels.shape)):
        raise ProofreadError(f"point {list(p)} is outside the labels {tuple(labels.shape)}")
    return p


def label_at(labels: Any, point: Sequence[float]) -> int:
    """The id at a voxel (``point`` is rounded to the nearest voxel)."""
    return int(np.asarray(labels[_point(labels, point)]))


# -- maps -----------------------------------------------------------------------------------------
def elevation(predictions: Any, box: Box, target: str | None, channel_names: Sequence[str],
              mask: np.ndarray, method: str | None = None) -> tuple[np.ndarray, str]:
    """The landscape a split floods inside ``box`` and its name: the ``contour`` or ``boundary``
    map, ``1 - mean affinity`` (affinities), or the negated distance to the object's surface when
    there are no maps (``"distance"``). ``method`` forces one (as recorded in a log)."""
    from scipy.ndimage import distance_transform_edt

    names = list(channel_names)
    if method is None:
        method = ("contour" if "contour" in names else "boundary" if "boundary" in names
                  else "affinities" if target == "affinities" else "distance")
        method = method if predictions is not None else "distance"
    if method == "distance":
        return -distance_transform_edt(mask).astype(np.float32), method
    if predictions is None:
        raise ProofreadError(f"splitting along the {method} map needs the predicted maps (segment first)")
    from .postprocess.maps import map_scale

    if len(predictions.shape) != len(box) + 1:
        raise ProofreadError(f"maps of shape {tuple(predictions.shape)} do not match {len(box)}D labels")
    scale = map_scale(predictions)
    if method == "affinities":
        crop = _read(predictions, (slice(None), *box)).astype(np.float32) / scale
        return 1.0 - crop.mean(axis=0), method
    if method not in names:
        raise ProofreadError(f"the maps have no '{method}' channel (they have {names})")
    return _read(predictions, (names.index(method), *box)).astype(np.float32) / scale, method


# -- the editor -----------------------------------------------------------------------------------
class Proofreader:
    """Edits ``labels`` in place, keeps the undo stack and the replayable :attr:`log`.

    Parameters
    ----------
    labels
        Writable instance labels (numpy, zarr), 0 = background.
    predictions
        The maps ``(C, *labels.shape)`` the labels came from (splits follow them), or ``None``.
    target, channel_names
        The model's target (``"bcd"``, ``"affinities"``, ...) and the maps' channel names.
    """

    def __init__(self, labels: Any, predictions: Any = None, target: str | None = None,
                 channel_names: Sequence[str] = ()) -> None:
        self.labels = labels
        self.predictions = predictions
        self.target = target
        self.channel_names = tuple(channel_names)
        self.log: list[dict[str, Any]] = []
        self._done: list[Edit] = []
        self._boxes: dict[int, Box] = {}
        self._next: int | None = None

    # bookkeeping
    def invalidate(self) -> None:
        """Forget the cached boxes and next id (the labels were changed by something else)."""
        self._boxes.clear()
        self._next = None

    def boxes(self, ids: Iterable[int]) -> dict[int, Box]:
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in self._boxes]
        if missing:
            self._boxes.update(object_boxes(self.labels, missing))
        return {i: self._boxes[i] for i in ids if i in self._boxes}

    def next_id(self) -> int:
        if self._next is None:
            self._next = max_label(self.labels) + 1
        return self._next

    def _ids(self, record: dict[str, Any], least: int = 1) -> list[int]:
        if record.get("points"):
            ids = [label_at(self.labels, p) for p in record["points"]]
            if 0 in ids:
                raise ProofreadError(f"no object at point {list(record['points'][ids.index(0)])} (background)")
        else:
            ids = [int(i) for i in record.get("ids", ())]
        ids = list(dict.fromkeys(i for i in ids if i))
        if len(ids) < least:
            raise ProofreadError(f"{record['op']} needs {least} object(s) or more, got {len(ids)}")
        boxes = self.boxes(ids)
        if len(boxes) < len(ids):
            raise ProofreadError(f"no object with id {[i for i in ids if i not in boxes]} in the labels")
        return ids

    # computing (read-only)
    def compute(self, record: dict[str, Any]) -> Edit:
        """The edit ``record`` asks for, computed without writing (see the module docstring)."""
        op = record.get("op")
        if op not in OPS:
            raise ProofreadError(f"unknown proofreading operation {op!r} (one of {', '.join(OPS)})")
        rec = dict(record)
        if "points" in rec:
            rec["points"] = [[int(round(float(v))) for v in p] for p in rec["points"]]
        return getattr(self, f"_{op}")(rec)

    def _merge(self, rec: dict[str, Any]) -> Edit:
        ids = self._ids(rec, least=2)
        into, boxes = ids[0], self.boxes(ids)
        patches = [self._patch(boxes[i], lambda crop, i=i: crop == i, into) for i in ids[1:]]
        return Edit({**rec, "ids": ids}, patches, tuple(ids), self.next_id())

    def _delete(self, rec: dict[str, Any]) -> Edit:
        ids = self._ids(rec)
        boxes = self.boxes(ids)
        return Edit({**rec, "ids": ids}, [self._patch(boxes[i], lambda c, i=i: c == i, 0) for i in ids],
                    tuple(ids), self.next_id())

    def _fill_holes(self, rec: dict[str, Any]) -> Edit:
        from scipy.ndimage import binary_fill_holes

        ids, per_slice = self._ids(rec), bool(rec.get("per_slice", False))
        boxes = self.boxes(ids)

        def holes(crop: np.ndarray, i: int) -> np.ndarray:
            obj = crop == i
            filled = (np.stack([binary_fill_holes(s) for s in obj]) if per_slice and obj.ndim == 3
                      else binary_fill_holes(obj))
            return filled & (crop == 0)  # enclosed background only: other objects stay

        patches = [self._patch(boxes[i], lambda c, i=i: holes(c, i), i) for i in ids]
        return Edit({**rec, "ids": ids, "per_slice": per_slice}, [p for p in patches if p.mask.any()],
                    tuple(ids), self.next_id())

    def _split(self, rec: dict[str, Any]) -> Edit:
        from skimage.segmentation import watershed

        seeds = [list(_point(self.labels, s)) for s in rec.get("seeds", ())]
        seeds = [list(s) for s in dict.fromkeys(tuple(s) for s in seeds)]
        if len(seeds) < 2:
            raise ProofreadError("a split needs two or more seeds (distinct voxels) inside one object")
        ids = {label_at(self.labels, s) for s in seeds}
        if len(ids) != 1 or 0 in ids:
            raise ProofreadError(f"the seeds must all lie in one object; they are on ids {sorted(ids)}")
        obj = ids.pop()
        box = self.boxes([obj])[obj]
        crop = _read(self.labels, box)
        mask = crop == obj
        land, method = elevation(self.predictions, box, self.target, self.channel_names, mask, rec.get("elevation"))
        markers = np.zeros(crop.shape, np.int32)
        for k, s in enumerate(seeds, start=1):
            markers[tuple(v - b.start for v, b in zip(s, box))] = k
        regions = watershed(land, markers, mask=mask)
        first = self.next_id()
        new_ids = list(range(first, first + len(seeds) - 1))
        logged = [int(i) for i in rec.get("new_ids", ())]  # a replay keeps the logged ids when they are free
        if len(logged) == len(new_ids) and logged != new_ids and not self.boxes(logged) and 0 not in logged:
            new_ids = logged
        if crop.dtype.kind in "iu" and max(new_ids) > np.iinfo(crop.dtype).max:
            raise ProofreadError(f"new id {max(new_ids)} does not fit the labels' type {crop.dtype}")
        table = np.array([obj, obj, *new_ids], dtype=crop.dtype)  # 0 (unreached) and 1 keep the id
        change = mask & (regions > 1)
        after = table[regions[change]]
        patch = Patch(box, change, crop[change], after)
        return Edit({**rec, "id": obj, "seeds": seeds, "elevation": method, "new_ids": new_ids}, [patch],
                    (obj, *new_ids), max(first, max(new_ids) + 1))

    def _patch(self, box: Box, where: Any, value: int) -> Patch:
        crop = _read(self.labels, box)
        mask = where(crop)
        return Patch(box, mask, crop[mask], np.full(int(mask.sum()), value, dtype=crop.dtype))

    # writing
    def commit(self, edit: Edit) -> Edit:
        """Write a computed edit, log it and keep it for :meth:`undo`."""
        for p in edit.patches:
            p.write(self.labels)
        self._done.append(edit)
        self.log.append(edit.record)
        self._forget(edit)
        self._next = max(edit.next_id, self._next or 0)
        return edit

    def do(self, record: dict[str, Any]) -> Edit:
        """:meth:`compute` and :meth:`commit` in one call."""
        return self.commit(self.compute(record))

    def undo(self) -> Edit | None:
        """Take back the last edit exactly (``None`` when there is none)."""
        if not self._done:
            return None
        edit = self._done.pop()
        self.log.pop()
        for p in reversed(edit.patches):
            p.write(self.labels, undo=True)
        self._forget(edit)
        self._next = None if edit.record["op"] == "split" else edit.next_id  # a split's ids are free again
        return edit

    def _forget(self, edit: Edit) -> None:
        for i in edit.changed:
            self._boxes.pop(int(i), None)

    def merge(self, ids: Sequence[int] = (), points: Sequence[Sequence[float]] = ()) -> Edit:
        """Make the objects one (the first id, or the object at the first point)."""
        return self.do({"op": "merge", **({"points": points} if points else {"ids": list(ids)})})

    def delete(self, ids: Sequence[int] = (), points: Sequence[Sequence[float]] = ()) -> Edit:
        """Set the objects' voxels to background."""
        return self.do({"op": "delete", **({"points": points} if points else {"ids": list(ids)})})

    def fill_holes(self, ids: Sequence[int] = (), points: Sequence[Sequence[float]] = (),
                   per_slice: bool = False) -> Edit:
        """Give the objects the background they enclose (in 3D, or slice by slice)."""
        sel = {"points": points} if points else {"ids": list(ids)}
        return self.do({"op": "fill_holes", **sel, "per_slice": per_slice})

    def split(self, seeds: Sequence[Sequence[float]]) -> Edit:
        """Cut the object holding the seeds into one object per seed (seeded watershed on the maps)."""
        return self.do({"op": "split", "seeds": seeds})


def edit_job(editor: Proofreader, record: dict[str, Any]) -> Job[Edit]:
    """:meth:`Proofreader.compute` as a job (for a worker thread; the caller commits)."""
    yield Progress(0, 1, "proofread", str(record.get("op")))
    edit = editor.compute(record)
    yield Progress(1, 1, "proofread", str(record.get("op")))
    return edit


def replay(labels: Any, records: Iterable[dict[str, Any]], predictions: Any = None, target: str | None = None,
           channel_names: Sequence[str] = ()) -> Any:
    """Apply logged edits to ``labels`` in place (in order) and return them."""
    editor = Proofreader(labels, predictions, target, channel_names)
    for record in records:
        editor.do(record)
    return labels


def bundle_section(log: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``"proofreading"`` entry of a provenance bundle for ``log``."""
    import json

    return {"format": FORMAT, "edits": json.loads(json.dumps(list(log)))}

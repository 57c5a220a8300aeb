"""Provenance bundles: what made a segmentation, written beside it, enough to make it again.

Every segmentation written by :func:`napari_emseg.workflows.segment_job` (``rerun``) or
``napari-emseg segment`` carries a bundle in ``OUT/provenance.json`` (written atomically) and in
the ``provenance`` attribute of its zarr arrays (and of the container); labels exported from the
Segment widget carry it in ``LABELS.provenance.json`` (:func:`export_bundle`):

``model``        checkpoint path, its file sha256, a sha256 of the weights, model card and info
``config``       the whole :class:`~napari_emseg.workflows.SegmentConfig` (inference, every
                 post-processing section, voxel-size matching); ``postprocess``: whether labels were made
``input``        path, channel, shape, dtype, voxel size, and a sha256 over the data read block by block
``voxel_size_match``  what voxel-size matching did (see :mod:`napari_emseg.resample`)
``environment``  versions of napari-emseg, torch, monai, numpy, zarr, waterz, scikit-image, scipy,
                 dask; Python, platform, device (with its name), torch threads
``run``          start and end (UTC), wall time, command line, working directory
``results``      output paths, object count and a value checksum of the labels

:func:`napari_emseg.rerun.rerun_job` (``napari-emseg rerun OUTPUT``) runs the job again from a
bundle and says whether the new labels equal the recorded ones; on the same CPU they do, bit for bit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmsegError
from .progress import Job, Progress

__all__ = [
    "FORMAT", "PROVENANCE_FILE", "ATTR_KEY", "PACKAGES", "ProvenanceError",
    "checksum_job", "content_checksum", "file_sha256", "weights_sha256", "package_versions",
    "environment", "record_job", "write_bundle", "export_bundle", "read_bundle",
]

logger = logging.getLogger(__name__)

FORMAT = "napari-emseg.provenance/1"
PROVENANCE_FILE = "provenance.json"
ATTR_KEY = "provenance"
PACKAGES = ("napari-emseg", "torch", "monai", "numpy", "zarr", "waterz", "scikit-image", "scipy", "dask")
LABELS_DTYPE = "uint64"
"""Labels are hashed by value (as uint64), so zarr uint32 and TIFF uint16 copies agree."""


class ProvenanceError(EmsegError):
    """A bundle is missing or unusable, or what it names (model, input) has changed."""


# -- checksums --------------------------------------------------------------------------------
def checksum_job(array: Any, *, block: Sequence[int] | None = None, dtype: str | None = None) -> Job[dict[str, Any]]:
    """A sha256 over an array's values, read one block at a time (a generator job).

    The digest covers the shape, dtype and every block's bytes in C order, blocks in C order of
    their grid; ``block`` defaults to the array's own chunks (dask, zarr, h5py) and is returned
    with the digest, so the same file gives the same digest. ``dtype`` hashes values cast to it.
    """
    from .io import Volume

    data = array.data if isinstance(array, Volume) else array
    shape = tuple(int(s) for s in data.shape)
    blk = tuple(int(b) for b in (block or _native_chunks(data) or _default_block(shape)))
    blk = tuple(max(1, min(b, n)) for b, n in zip(blk, shape))
    out_dtype = np.dtype(dtype or data.dtype)
    h = hashlib.sha256(json.dumps({"shape": shape, "dtype": out_dtype.str, "block": blk}).encode())
    starts = list(product(*[range(0, n, b) for n, b in zip(shape, blk)]))
    top = None
    for i, st in enumerate(starts):
        region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(st, blk, shape))
        part = data[region]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        h.update(np.ascontiguousarray(part, dtype=out_dtype))
        top = part.max() if top is None else max(top, part.max())
        if i % 16 == 15 or i == len(starts) - 1:
            yield Progress(i + 1, len(starts), "checksum", "hashing the data block by block")
    return {"algorithm": "sha256-blocks", "digest": h.hexdigest(), "block": list(blk), "dtype": out_dtype.name,
            "shape": list(shape), "max": top.item() if top is not None else None}


def content_checksum(array: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`checksum_job` run to the end (no progress shown)."""
    from .progress import drain

    return drain(checksum_job(array, **kwargs), show=False)


def _native_chunks(data: Any) -> tuple[int, ...] | None:
    chunks = getattr(data, "chunksize", None) or getattr(data, "chunks", None)
    if chunks is None or isinstance(chunks, bool):
        return None
    if chunks and isinstance(chunks[0], tuple):  # dask's per-axis chunk tuples
        chunks = tuple(max(c) for c in chunks)
    return tuple(int(c) for c in chunks)


def _default_block(shape: Sequence[int]) -> tuple[int, ...]:
    from .io import default_chunks

    return default_chunks(shape)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 4 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 22), b""):
            h.update(piece)
    return h.hexdigest()


def weights_sha256(model: Any) -> str:
    """sha256 over a model's ``state_dict`` (names, dtypes, shapes and bytes, in name order)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# -- environment ------------------------------------------------------------------------------
def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` for a missing package)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(device: Any = None) -> dict[str, Any]:
    """Package versions, Python, platform and the compute device (with the GPU's name)."""
    import torch

    dev = torch.device(str(device)) if device is not None else torch.device("cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {"packages": package_versions(), "python": platform.python_version(), "platform": platform.platform(),
            "device": str(dev), "device_name": name, "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count()}


def _cpu_name() -> str:
    try:  # Linux names the CPU model here; elsewhere platform says what it can
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def now() -> str:
    """The time in UTC, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- bundles ----------------------------------------------------------------------------------
def record_job(
    out: str | os.PathLike | None,
    *,
    model: Any,
    config: Any,
    image: Any,
    voxel_size: Sequence[float] | None,
    outputs: Mapping[str, str],
    labels: Any = None,
    postprocess: bool = True,
    model_path: str | os.PathLike | None = None,
    input_path: str | None = None,
    channel: int | None = None,
    voxel_plan: Any = None,
    device: Any = None,
    started: float | None = None,
    command: Sequence[str] | None = None,
    postprocess_source: Mapping[str, Any] | None = None,
) -> Job[dict[str, Any]]:
    """Hash the input (and labels), assemble the bundle and write it beside ``out`` (a job).

    Parameters
    ----------
    out
        The output container (``OUT.zarr``); the bundle goes to ``OUT/provenance.json`` and
        into the attributes of the zarr arrays in ``outputs`` and of the container. ``None``:
        only return it (the widget keeps it until the labels are exported, :func:`export_bundle`).
    model, model_path
        The model used (``.info``, ``.card``, weights) and its checkpoint file, if any
        (``rerun`` needs it).
    config
        The :class:`~napari_emseg.workflows.SegmentConfig` of the job.
    image, input_path, channel, voxel_size
        The image as read (array-like or :class:`~napari_emseg.io.Volume`), its file, channel
        and the voxel size used (``None``: unknown).
    outputs, labels, postprocess
        ``{"predictions": path, "labels": path}`` as written; the labels array (hashed by value).
    voxel_plan
        The :class:`~napari_emseg.resample.VoxelPlan` of the run.
    device, started, command
        Compute device; ``time.time()`` at the start of the job; the command line (``None``
        from the widget).
    postprocess_source
        Which post-processing settings made the labels: the user's, the model's calibration or
        the defaults (:func:`napari_emseg.calibration.resolve_postprocess`); recorded as given.
    """
    import time

    from . import __version__
    from .io import Volume

    finished = time.time()
    data = image.data if isinstance(image, Volume) else image
    input_path = input_path or (getattr(image, "path", "") or None)
    t0 = time.perf_counter()
    checksum = yield from checksum_job(data)
    labels_sum = None
    if labels is not None:
        labels_sum = yield from checksum_job(labels, block=_default_block(labels.shape), dtype=LABELS_DTYPE)
    path = Path(model_path).resolve() if model_path is not None else None
    card = getattr(model, "card", None)
    bundle = {
        "format": FORMAT,
        "napari_emseg": __version__,
        "model": {
            "path": str(path) if path else None,
            "sha256": file_sha256(path) if path and path.is_file() else None,
            "weights_sha256": weights_sha256(model),
            "card": card.to_dict() if hasattr(card, "to_dict") else card,
            "info": model.info.to_dict(),
        },
        "config": config.to_dict(),
        "postprocess": bool(postprocess),
        "input": {
            "path": str(Path(input_path).resolve()) if input_path and Path(_file_part(input_path)).exists()
            else input_path,
            "channel": channel, "shape": [int(s) for s in data.shape], "dtype": str(data.dtype),
            "voxel_size": [float(v) for v in voxel_size] if voxel_size is not None else None,
            "checksum": checksum,
        },
        "voxel_size_match": voxel_plan.to_dict() if voxel_plan is not None else None,
        "environment": environment(device),
        "run": {
            "started": _iso(started) if started else None, "finished": _iso(finished),
            "wall_time_s": round(finished - started, 3) if started else None,
            "checksum_s": round(time.perf_counter() - t0, 3),
            "command": list(command) if command is not None else None, "cwd": os.getcwd(),
        },
        "results": {
            "outputs": dict(outputs),
            "n_objects": int(labels_sum["max"]) if labels_sum else None,
            "labels_checksum": labels_sum,
        },
    }
    if postprocess_source:
        bundle["postprocess_source"] = dict(postprocess_source)
    if out is not None:
        write_bundle(out, bundle)
    return bundle


def _file_part(path: str) -> str:
    from .io import split_uri

    return split_uri(path)[0]


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def write_bundle(out: str | os.PathLike, bundle: Mapping[str, Any]) -> Path:
    """Write ``OUT/provenance.json`` atomically and put the bundle in the zarr attributes."""
    from ._atomic import atomic_write_text
    from ._outputs import guard_foreign
    from .io import jsonable

    out = Path(out)
    plain = jsonable(dict(bundle))
    text = json.dumps(plain, indent=2, default=str)
    target = out / PROVENANCE_FILE
    guard_foreign(target, option="output")
    atomic_write_text(target, text + "\n")
    _set_attrs(out, plain, bundle.get("results", {}).get("outputs", {}).values())
    return target


def _set_attrs(out: Path, bundle: dict[str, Any], outputs: Any) -> None:
    import zarr

    nodes = [out, *(Path(p) for p in outputs)]
    for node in nodes:
        if node.suffix.lower() in (".tif", ".tiff") or not node.exists():
            continue
        try:
            zarr.open(str(node), mode="r+").attrs.update({ATTR_KEY: json.loads(json.dumps(bundle, default=str))})
        except Exception as err:  # noqa: BLE001 - not a zarr node: the JSON file still holds the bundle
            logger.debug("no provenance attribute on %s: %s", node, err)


def export_bundle(path: str | os.PathLike, bundle: Mapping[str, Any], labels: Any,
                  changes: Mapping[str, Any] | None = None) -> Path:
    """Record labels exported to ``path`` (zarr array or TIFF) with the bundle of the job that
    made them: ``changes`` (e.g. the post-processing chosen afterwards, export details) are merged
    in, ``results`` describe the exported labels (hashed by value, hand edits included). The
    bundle goes to ``PATH.provenance.json`` beside the file and, for zarr, into its attributes."""
    import copy

    from ._atomic import atomic_write_text
    from .io import jsonable

    path = Path(path)
    plain = copy.deepcopy(jsonable(dict(bundle)))
    for key, value in jsonable(dict(changes or {})).items():
        if isinstance(value, dict) and isinstance(plain.get(key), dict):
            plain[key].update(value)
        else:
            plain[key] = value
    labels_sum = content_checksum(labels, block=_default_block(labels.shape), dtype=LABELS_DTYPE)
    plain["results"] = {"outputs": {"labels": str(path)}, "n_objects": int(labels_sum["max"]),
                        "labels_checksum": labels_sum}
    target = path.with_name(path.name + "." + PROVENANCE_FILE)
    from ._outputs import guard_foreign

    guard_foreign(target, option="output")
    atomic_write_text(target, json.dumps(plain, indent=2, default=str) + "\n")
    if path.suffix.lower() not in (".tif", ".tiff"):
        import zarr

        zarr.open(str(path), mode="r+").attrs.update({ATTR_KEY: plain})  # an array, or an OME-Zarr group
    return target


def read_bundle(output: str | os.PathLike) -> dict[str, Any]:
    """The bundle of an output: ``OUTPUT/provenance.json``, or the attribute of a zarr array/group
    (``OUTPUT`` may be the container, its ``labels`` array or the JSON file itself)."""
    path = Path(output)
    candidates = [path] if path.suffix == ".json" else [path / PROVENANCE_FILE, path.parent / PROVENANCE_FILE,
                                                        path.with_name(path.name + "." + PROVENANCE_FILE)]
    for c in candidates:
        if c.is_file():
            bundle = json.loads(c.read_text())
            break
    else:
        try:
            import zarr

            bundle = dict(zarr.open(str(path), mode="r").attrs).get(ATTR_KEY)
        except Exception:  # noqa: BLE001 - reported below
            bundle = None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ProvenanceError(f"{output}: no provenance bundle ({PROVENANCE_FILE} or zarr attribute "
                              f"'{ATTR_KEY}'); only outputs of napari-emseg segment or the Segment widget have one")
    return bundle

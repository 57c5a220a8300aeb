"""Make a recorded segmentation again from its provenance bundle (``napari-emseg rerun OUTPUT``).

The bundle (:mod:`napari_emseg.provenance`) names the checkpoint, the input, the voxel size and
every setting; :func:`rerun_job` runs :func:`~napari_emseg.workflows.segment_job` with them,
replays the hand edits recorded under ``"proofreading"`` (:mod:`napari_emseg.proofread`) and
reports whether the checkpoint, the input and the labels are identical to the recorded ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .progress import Job
from .provenance import PROVENANCE_FILE, ProvenanceError, checksum_job, file_sha256, read_bundle

__all__ = ["RerunResult", "default_rerun_path", "rerun_job"]

logger = logging.getLogger(__name__)


@dataclass
class RerunResult:
    """What :func:`rerun_job` returns: the new segmentation and how it compares with the bundle."""

    segmentation: Any
    out: Path
    bundle: dict[str, Any]
    input_identical: bool
    labels_identical: bool | None
    model_identical: bool


def default_rerun_path(output: str | os.PathLike) -> Path:
    """``seg.zarr`` -> ``seg-rerun.zarr``, ``seg.ome.zarr`` -> ``seg-rerun.ome.zarr`` (beside the original)."""
    p = Path(output)
    if p.name == PROVENANCE_FILE:
        p = p.parent
    if p.name.lower().endswith(".ome.zarr"):
        return p.with_name(f"{p.name[:-len('.ome.zarr')]}-rerun{p.name[-len('.ome.zarr'):]}")
    return p.with_name(f"{p.stem}-rerun{p.suffix}")


def rerun_job(
    output: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model: str | os.PathLike | None = None,
    image: str | None = None,
    device: str | None = None,
    strict: bool = True,
    command: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Job[RerunResult]:
    """Make a recorded segmentation again from its bundle (a generator job).

    Parameters
    ----------
    output
        The recorded output (container, its JSON or one of its arrays).
    out
        Where to write the new one (default ``<name>-rerun.zarr`` beside it).
    model, image
        Use this checkpoint / input instead of the recorded paths (moved files).
    device
        Compute on this device instead of the recorded setting (e.g. ``"cpu"``).
    strict
        Refuse (:class:`ProvenanceError`) when the checkpoint file differs from the recorded
        one; with ``False`` only warn. A changed input is always reported in the result.
    overwrite
        Replace what another run wrote at ``out`` (an earlier rerun of the same bundle is
        replaced anyway). ``out`` may never be the recorded output or its input.
    """
    from .io import open_volume
    from .workflows import SegmentConfig, segment_job

    bundle = read_bundle(output)
    src = Path(output).parent if Path(output).suffix == ".json" else Path(output)
    ckpt = Path(model or bundle["model"].get("path") or "")
    if not ckpt.is_file():
        raise ProvenanceError(f"{output}: the recorded checkpoint {str(ckpt) or '(none: an in-memory model)'} "
                              "is not there; pass the checkpoint with --model")
    same_model = file_sha256(ckpt) == bundle["model"].get("sha256")
    if not same_model:
        msg = f"{ckpt}: not the checkpoint recorded in {output} (sha256 differs)"
        if strict:
            raise ProvenanceError(msg + "; pass the recorded one, or --no-strict to run anyway")
        logger.warning(msg)
    rec_in = bundle["input"]
    path = image or rec_in.get("path")
    if not path:
        raise ProvenanceError(f"{output}: the input was an in-memory layer with no file; pass it with --image")
    vs = rec_in.get("voxel_size")
    volume = open_volume(path, channel=rec_in.get("channel"), voxel_size=vs)
    config = SegmentConfig.from_dict(bundle["config"], strict=False)
    config = config.replace(inference=config.inference.replace(resume=False, **({"device": device} if device else {})))
    target = Path(out) if out is not None else default_rerun_path(src)
    from ._outputs import check_not_input

    check_not_input([target], [src, path, ckpt])
    seg = yield from segment_job(ckpt, volume, config, out=target, calibrated=False,  # the recorded settings
                                 voxel_size=tuple(vs) if vs else None,
                                 postprocess=bool(bundle.get("postprocess", True)), command=command,
                                 overwrite=overwrite,
                                 attrs={"source": {"image": str(path), "model": str(ckpt)}, "rerun_of": str(src)})
    if (bundle.get("proofreading") or {}).get("edits"):
        yield from _replay_proofreading(seg, bundle["proofreading"], target)
    new = seg.provenance or {}
    old_sum, new_sum = rec_in.get("checksum") or {}, new.get("input", {}).get("checksum") or {}
    if old_sum.get("block") and new_sum.get("block") != old_sum["block"]:  # e.g. a layer then, a file now
        new_sum = yield from checksum_job(volume, block=old_sum["block"])
    same_input = bool(old_sum) and new_sum.get("digest") == old_sum.get("digest")
    old_labels = (bundle.get("results") or {}).get("labels_checksum")
    new_labels = (new.get("results") or {}).get("labels_checksum")
    same_labels = None if not old_labels or not new_labels else old_labels["digest"] == new_labels["digest"]
    if not same_input:
        logger.warning("the input's content differs from the recorded one (checksum): results may differ")
    return RerunResult(seg, target, bundle, same_input, same_labels, same_model)


def _replay_proofreading(seg: Any, section: dict[str, Any], out: Path) -> Job[None]:
    """Replay a bundle's proofreading edits on the new labels; rewrite them and the bundle."""
    import numpy as np

    from .io import default_chunks
    from .progress import Progress
    from .proofread import replay
    from .provenance import LABELS_DTYPE, write_bundle
    from .workflows import LABELS, SegmentConfig, write_labels

    if seg.labels is None:
        logger.warning("the recorded labels were proofread, but this run made no labels: edits not replayed")
        return
    edits = section["edits"]
    yield Progress(0, len(edits), "proofread", f"replaying {len(edits)} edit(s)")
    labels = np.array(seg.labels[...] if not isinstance(seg.labels, np.ndarray) else seg.labels)
    seg.labels = replay(labels, edits, seg.predictions, seg.target, seg.channel_names)
    yield Progress(len(edits), len(edits), "proofread", "edits replayed")
    bundle = seg.provenance
    post = (bundle or {}).get("config", {}).get(SegmentConfig.section_for(seg.target))
    seg.paths[LABELS] = write_labels(out / LABELS, labels, seg.voxel_size,
                                     {"target": seg.target, "postprocess": post, "postprocess_source":
                                      seg.postprocess_source, "proofreading": {"edits": len(edits)}})
    if bundle is not None:
        checksum = yield from checksum_job(labels, block=default_chunks(labels.shape), dtype=LABELS_DTYPE)
        bundle["proofreading"] = section
        bundle["results"] = {**bundle.get("results", {}), "outputs": dict(seg.paths),
                             "n_objects": int(checksum["max"]), "labels_checksum": checksum}
        write_bundle(out, bundle)

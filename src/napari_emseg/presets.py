"""One-click presets: a bundled fine-tuned model and post-processing settings per structure.

``Mitochondria`` and ``Neurons`` in the Segment widget (and ``napari-emseg segment --preset``)
pick the bundled model for the structure and thresholds that suit it. The bundled models were
fine-tuned with napari-emseg on real EM; their cards say on what and how well. On other data
they are a starting point: fine-tune on a few painted slices of your own volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import EmsegError
from .inference.config import InferenceConfig
from .postprocess.mitochondria import MitoConfig
from .postprocess.neurons import NeuronConfig
from .resample import VoxelMatchConfig
from .workflows import SegmentConfig


@dataclass(frozen=True)
class Preset:
    """A named one-click segmentation: which bundled model, which settings."""

    name: str
    task: str
    model: str  # file name in models/weights/
    config: SegmentConfig
    about: str


PRESETS: dict[str, Preset] = {
    "mitochondria": Preset(
        name="mitochondria", task="mitochondria", model="emseg-mito-vnc.safetensors",
        config=SegmentConfig(mitochondria=MitoConfig(mode="3d", min_size=200)),
        about="mitochondria in serial-section TEM of insect neuropil (BCD + seeded watershed)",
    ),
    "neurons": Preset(
        name="neurons", task="neurons", model="emseg-boundaries-em.safetensors",
        config=SegmentConfig(neurons=NeuronConfig(threshold=0.5, min_size=200)),
        about="neurite membranes in serial-section TEM (boundaries -> affinities -> waterz)",
    ),
}


def preset_config(name: str) -> SegmentConfig:
    """The preset's settings, with the post-processing tuned when its model was trained (card:
    calibrated on painted slices, or an older flat record; :func:`napari_emseg.calibration.stored_postprocess`)."""
    from .calibration import stored_postprocess
    from .models.checkpoint import load_checkpoint

    preset = PRESETS[name]
    cfg = preset.config
    ckpt = load_checkpoint(preset_model_path(name), tensors=False)
    stored = stored_postprocess(ckpt.card, ckpt.info.target)
    if stored is not None:
        key = "neurons" if preset.task == "neurons" else "mitochondria"
        cfg = cfg.replace(**{key: stored[0]})
    return cfg


def preset_segment_config(name: str, inference: InferenceConfig | None = None,
                          voxel_match: VoxelMatchConfig | None = None) -> SegmentConfig:
    """The whole :class:`SegmentConfig` of preset ``name``: what ``segment --preset NAME`` and the
    Segment widget's one-click button both run.

    Parameters
    ----------
    name
        A key of :data:`PRESETS`.
    inference
        The inference settings the front end's options describe (``--tile``, ``--batch``, ``--tta``,
        ``--device``; the widget's Advanced box and device choice); default :class:`InferenceConfig`.
    voxel_match
        Voxel-size matching (``--no-voxel-match``, ``--voxel-tolerance``); default on.

    Returns
    -------
    SegmentConfig
        The preset's post-processing (:func:`preset_config`: tuned when its model was trained),
        untouched by any other setting: ``--post`` (CLI) and thresholds changed after a run (widget)
        apply on top, explicitly, as for any model.
    """
    return preset_config(name).replace(inference=inference or InferenceConfig(),
                                       voxel_match=voxel_match or VoxelMatchConfig())


def preset_model_path(name: str) -> Path:
    """The bundled checkpoint of preset ``name``; a clear error when it is not installed."""
    from .models.registry import bundled_dir

    if name not in PRESETS:
        raise EmsegError(f"no preset {name!r}; choose one of {sorted(PRESETS)}")
    path = bundled_dir() / PRESETS[name].model
    if not path.exists():
        raise EmsegError(
            f"the {name} model ({PRESETS[name].model}) is not installed with this copy of napari-emseg; "
            "fine-tune one on a few painted slices (Fine-tune widget or `napari-emseg finetune`)"
        )
    return path

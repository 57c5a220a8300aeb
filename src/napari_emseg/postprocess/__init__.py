"""Instance extraction: prediction maps -> labels (waterz for neurons, BCD watershed, components).

Entry point: :func:`extract_instances` (and :func:`extract_instances_job`, its progress-yielding
generator). Re-running neurons at new thresholds without recomputing fragments:
:func:`agglomeration_job` / :func:`build_agglomeration` return an :class:`Agglomeration` whose
:meth:`~Agglomeration.segmentation` takes a new threshold instantly.

Names are imported on first use, so ``import napari_emseg.postprocess`` does not load waterz.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "extract_instances": "extract",
    "extract_instances_job": "extract",
    "default_config": "extract",
    "TARGET_CONFIGS": "extract",
    "NeuronConfig": "neurons",
    "agglomeration_job": "neurons",
    "build_agglomeration": "neurons",
    "neurons_job": "neurons",
    "segment_neurons": "neurons",
    "affinities_for_waterz": "neurons",
    "FragmentConfig": "fragments",
    "fragments_job": "fragments",
    "Agglomeration": "agglomerate",
    "MERGE_FUNCTIONS": "agglomerate",
    "waterz_agglomerate": "agglomerate",
    "MitoConfig": "mitochondria",
    "bcd_watershed": "mitochondria",
    "mitochondria_job": "mitochondria",
    "segment_mitochondria": "mitochondria",
    "SemanticConfig": "semantic",
    "class_map": "semantic",
    "semantic_job": "semantic",
    "segment_semantic": "semantic",
    "affinities_from_boundaries": "affinities",
    "relabel_consecutive": "cleanup",
    "remove_small_objects": "cleanup",
    "VolumeTooLargeError": "memory",
    "check_memory": "memory",
    "MapError": "maps",
}


__getattr__, __dir__, __all__ = lazy_attributes(__name__, _LAZY)

"""Segmentation metrics: VOI split/merge and adapted Rand (neurons), AP by size (mitochondria),
IoU/F1/precision/recall per class (semantic). :func:`evaluate` runs a task's metrics at once.

Names are imported on first use, so ``import napari_emseg.evaluation`` stays light.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "evaluate": "tasks",
    "format_results": "tasks",
    "contingency": "table",
    "Contingency": "table",
    "EvaluationError": "table",
    "voi": "neurons",
    "VOI": "neurons",
    "adapted_rand": "neurons",
    "ARand": "neurons",
    "neuron_metrics": "neurons",
    "average_precision": "instances",
    "APResult": "instances",
    "match_instances": "instances",
    "coco_ap": "instances",
    "SIZE_BINS": "instances",
    "class_scores": "semantic",
    "binary_scores": "semantic",
    "confusion_matrix": "semantic",
    "ClassScores": "semantic",
}


__getattr__, __dir__, __all__ = lazy_attributes(__name__, _LAZY)

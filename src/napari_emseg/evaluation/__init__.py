"""Segmentation metrics: VOI split/merge and adapted Rand (neurons), AP by size (mitochondria),
IoU/F1/precision/recall per class (semantic). :func:`evaluate` runs a task's metrics at once.

Names are imported on first use, so ``import napari_emseg.evaluation`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

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

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)

"""Post-processing calibrated when a model was fine-tuned: how it is stored and when it is used.

:func:`napari_emseg.finetune.calibrate.calibrate_job` tunes the post-processing thresholds on
the painted slices at the end of a fine-tune and stores them in the checkpoint's card::

    card["postprocess"] = {
        "target": "bcd", "config": {...MitoConfig...},
        "source": "calibrated on painted slices",
        "choice": "calibrated" | "defaults" | "calibrated (the defaults find no objects)",
        "metric": "ap", "score": 0.41, "default_score": 0.0,      # on all painted slices
        "cv_score": 0.38, "cv_default_score": 0.0,               # held-out (leave one slice out)
        "objects": 38, "default_objects": 0,                     # 2D objects on the painted slices
        "axis": 0, "slices": [6, 17], "folds": 2, "settings": 243, "elapsed_s": 4.2, ...}

Older checkpoints (the bundled one-click models) hold a flat ``{"target": ..., **config}``;
both are read by :func:`stored_postprocess`.

:func:`resolve_postprocess` is the one rule that ``segment`` (CLI and :func:`~napari_emseg.
workflows.segment_job`), the Segment widget, the presets and the demo apply: settings the user
gave win; otherwise the checkpoint's calibrated settings; otherwise the defaults. The returned
``source`` dict is what the provenance records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import Config

__all__ = [
    "CARD_KEY", "CALIBRATED", "stored_postprocess", "resolve_postprocess", "describe_source",
]

CARD_KEY = "postprocess"
CALIBRATED = "calibrated on painted slices"
"""``source`` of post-processing settings taken from a checkpoint's calibration."""

_SUMMARY = ("choice", "metric", "score", "default_score", "cv_score", "cv_default_score", "objects",
            "default_objects", "slices", "axis")


def stored_postprocess(card: Mapping[str, Any] | None, target: str) -> tuple[Config, dict[str, Any]] | None:
    """The post-processing config a checkpoint's card stores for ``target``, and where it came from.

    Returns ``None`` when the card stores none (or calibration was skipped, or it is for
    another target). The dict is the provenance record: ``{"source": ..., ...summary}``.
    """
    from .postprocess.extract import default_config

    entry = (card or {}).get(CARD_KEY)
    if not isinstance(entry, Mapping) or not entry or entry.get("skipped"):
        return None
    stored_target = entry.get("target")
    if stored_target is not None and _family(stored_target) != _family(target):
        return None
    base = default_config(target)
    if "config" in entry:  # written by calibrate_job
        cfg = type(base).from_dict(dict(entry["config"] or {}), strict=False)
        return cfg, {"source": entry.get("source", CALIBRATED),
                     **{k: entry[k] for k in _SUMMARY if k in entry}}
    flat = {k: v for k, v in entry.items() if k != "target"}  # older cards: the config itself
    return type(base).from_dict(flat, strict=False), {"source": "model card (tuned when the model was trained)"}


def resolve_postprocess(
    card: Mapping[str, Any] | None,
    target: str,
    given: Config | None = None,
    *,
    overrides: Any = (),
    use_calibration: bool = True,
) -> tuple[Config, dict[str, Any]]:
    """The post-processing config to use for a model, and a provenance record of the choice.

    Parameters
    ----------
    card
        The model's card (``model.card`` or ``load_checkpoint(path, tensors=False).card``).
    target
        The model's target.
    given
        The config the user gave (``None``: none). A config equal to the target's defaults
        counts as none given, so ``SegmentConfig()`` picks up the calibration.
    overrides
        ``FIELD=VALUE`` assignments (the CLI's ``--post``) applied on top of the chosen config:
        the user's fields win, the others keep their calibrated values.
    use_calibration
        ``False``: the checkpoint's calibration is ignored (defaults, or what was given).

    Rules, in order: a ``given`` config that differs from the defaults is used as is (source
    ``"user"``); else the checkpoint's stored config (source ``"calibrated on painted
    slices"``, or ``"model card"`` for older checkpoints); else the defaults. ``overrides``
    then change single fields (the source becomes ``"user"`` with the base recorded).
    """
    from .postprocess.extract import default_config

    defaults = default_config(target)
    if given is not None and given != defaults:
        cfg, source = given, {"source": "user"}
    else:
        stored = stored_postprocess(card, target) if use_calibration else None
        if stored is not None:
            cfg, source = stored
        else:
            cfg = defaults
            source = {"source": "defaults" if use_calibration else "defaults (calibration not used)"}
    overrides = [o for o in (overrides or ()) if o]
    if overrides:
        cfg = cfg.override(overrides)
        source = {"source": "user", "base": source["source"], "overrides": list(overrides)}
    return cfg, source


def describe_source(source: Mapping[str, Any] | None) -> str:
    """One line for the CLI and the widget: which post-processing settings made the labels."""
    if not source:
        return ""
    text = f"post-processing: {source.get('source')}"
    if source.get("base"):
        text += f" (on top of {source['base']}: {', '.join(source.get('overrides', []))})"
    if "score" in source and "metric" in source:
        text += f"; {source['metric']} {_num(source['score'])} on the painted slices (defaults {_num(source.get('default_score'))})"
    if source.get("choice") and source["choice"] != "calibrated":
        text += f"; kept: {source['choice']}"
    return text


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else str(v)


def _family(target: str) -> str:
    return "neurons" if target in ("affinities", "boundaries") else target

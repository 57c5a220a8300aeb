"""Networks, heads, self-describing checkpoints and the pretrained-encoder catalogue.

Importing this package is light (no torch); names resolve on first use::

    from napari_emseg.models import ModelConfig, build_model, head_info, load_model

See ``docs/models.md``.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "ModelInfo": "info",
    "apply_activation": "info",
    "ViT3D": "vit3d",
    "ViT": "vit3d",
    "vit3d": "vit3d",
    "VIT_SIZES": "vit3d",
    "UNETR": "unetr",
    "ResUNet3D": "resunet",
    "TransUNet2D": "transunet",
    "head_info": "heads",
    "channel_names": "heads",
    "ModelConfig": "build",
    "build_model": "build",
    "segmentation_config": "build",
    "count_parameters": "build",
    "Checkpoint": "checkpoint",
    "TransplantReport": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "read_state_dict": "checkpoint",
    "transplant_encoder": "checkpoint",
    "export_bioimageio": "bioimageio",
    "EncoderEntry": "registry",
    "list_encoders": "registry",
    "get_encoder": "registry",
    "fetch_encoder": "registry",
    "resolve_encoder": "registry",
    "model_for_encoder": "registry",
    "cache_dir": "registry",
}


__getattr__, __dir__, __all__ = lazy_attributes(__name__, _LAZY)

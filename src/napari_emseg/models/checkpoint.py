"""Self-describing checkpoints: one ``.safetensors`` file, weights plus JSON in its header.

Layout
------
A checkpoint is a single safetensors file. The tensors are the model's ``state_dict``; the
header's string metadata holds:

``format``   ``"napari-emseg.checkpoint/1"``
``config``   the :class:`~.build.ModelConfig` (JSON)
``info``     the :class:`~.info.ModelInfo` (JSON): task, channels, tile, voxel size, normalisation
``card``     the model card (JSON object): ``family``, ``method``, ``data``, ``steps``,
             ``final_loss``, ``licence``, ``command`` (to reproduce), ``training`` (summary), ...
``job``      the config of the job that made it (JSON object or ``null``)
``version``  the napari-emseg version that wrote it

Reading the header costs a few kilobytes, so catalogues list checkpoints without loading them.
Files are written atomically (a crash leaves the previous file). Nothing is ever unpickled:
third-party ``.pth``/``.pt`` weights go through ``torch.load(weights_only=True)``
(:func:`read_state_dict`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from .._atomic import atomic_path
from ..config import Config, ConfigError
from .build import ModelConfig, build_model
from .errors import (
    ChannelMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    NotACheckpointError,
    TaskMismatchError,
    TransplantError,
)
from .info import ModelInfo

__all__ = [
    "FORMAT", "Checkpoint", "TransplantReport", "save_checkpoint", "load_checkpoint", "load_model",
    "read_state_dict", "transplant_encoder",
]

logger = logging.getLogger(__name__)

FORMAT = "napari-emseg.checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds. ``tensors`` is empty when read with ``tensors=False``."""

    path: Path
    config: ModelConfig
    info: ModelInfo
    card: dict[str, Any]
    job: dict[str, Any] | None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    version: str = ""

    @property
    def task(self) -> str:
        return self.info.task


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    job: Config | Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (built by :func:`~.build.build_model`, or loaded) as a checkpoint.

    Parameters
    ----------
    path
        Target file, conventionally ``*.safetensors``; parent folders are created.
    model
        A model with ``.config`` and ``.info`` (unwrap ``DistributedDataParallel`` first).
    job
        The job config that made it (a :class:`~napari_emseg.config.Config` or a dict).
    card
        Model card fields (``family``, ``method``, ``data``, ``steps``, ``final_loss``,
        ``licence``, ``command``, ``training`` ...); defaults to ``model.card`` if present.

    Returns
    -------
    Path
        The written file.
    """
    model = getattr(model, "module", model)  # DDP / DataParallel
    cfg, info = getattr(model, "config", None), getattr(model, "info", None)
    if not isinstance(cfg, ModelConfig) or not isinstance(info, ModelInfo):
        raise TypeError("save_checkpoint needs a model built by build_model() (with .config and .info)")
    card = dict(card if card is not None else getattr(model, "card", {}) or {})
    job_dict = job.to_dict() if isinstance(job, Config) else (dict(job) if job is not None else None)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": cfg.to_json(indent=None),
        "info": info.to_json(indent=None),
        "card": json.dumps(card, default=str),
        "job": json.dumps(job_dict, default=str),
        "version": __version__,
    }
    path = Path(path)
    from .._outputs import guard_foreign

    guard_foreign(path, option="checkpoint")  # never replace a file napari-emseg did not write
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    logger.info("saved checkpoint %s (%s, %s)", path, cfg.arch, info.task)
    return path


def load_checkpoint(path: str | Path, *, tensors: bool = True) -> Checkpoint:
    """Read a checkpoint (header only when ``tensors=False``).

    ``path`` may also be a bioimage.io package written by ``napari-emseg export-model`` (a zip,
    its folder or its ``rdf.yaml``): the checkpoint it embeds is read (:mod:`.bioimageio`).

    With ``tensors`` the header is first checked against the network the metadata describes
    (:func:`~.validate.check_header`: names, shapes, size; built on the meta device), so a
    damaged or forged file is refused before anything big is allocated.

    Raises
    ------
    CheckpointNotFoundError, CorruptCheckpointError, NotACheckpointError
    """
    path = Path(path)
    if path.suffix.lower() == ".zip" or path.is_dir() or path.name in ("rdf.yaml", "bioimageio.yaml"):
        from .bioimageio.package import checkpoint_from_package, is_bioimageio_package

        if is_bioimageio_package(path):  # a bioimage.io package: its embedded checkpoint
            path = checkpoint_from_package(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {path}: no such file")
    if path.suffix.lower() in {".pth", ".pt", ".ckpt", ".bin"}:
        raise NotACheckpointError(
            f"{path} is a PyTorch weights file, not a napari-emseg checkpoint: load its encoder into a "
            "model with transplant_encoder(model, path) (read with torch.load(weights_only=True))"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptCheckpointError(
            f"checkpoint {path} is damaged or not a safetensors file ({err}); "
            "re-download or re-save it"
        ) from None
    if meta.get("format") != FORMAT:
        raise NotACheckpointError(
            f"{path} is a safetensors file without napari-emseg metadata (format "
            f"{meta.get('format')!r}); to use its weights as an encoder call transplant_encoder(model, path)"
        )
    try:
        config = ModelConfig.from_json(meta["config"], strict=False)
        info = ModelInfo.from_json(meta["info"], strict=False)
        card = json.loads(meta.get("card") or "{}")
        job = json.loads(meta.get("job") or "null")
    except (KeyError, ValueError, ConfigError) as err:
        raise CorruptCheckpointError(f"checkpoint {path}: unreadable metadata ({err})") from None
    data = _read_tensors(path, config, info) if tensors else {}
    return Checkpoint(path, config, info, card, job, data, meta.get("version", ""))


def _read_tensors(path: Path, config: ModelConfig, info: ModelInfo) -> dict[str, torch.Tensor]:
    """The weights, once the header is known to describe exactly the network of the metadata
    (checked on the meta device, so a forged header never allocates its model)."""
    from .validate import check_header

    try:
        check_header(path, config, info)
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptCheckpointError(
            f"checkpoint {path} is damaged or not a safetensors file ({err}); re-download or re-save it"
        ) from None


def load_model(
    path: str | Path | Checkpoint,
    device: str | torch.device = "cpu",
    *,
    expect_task: str | None = None,
    expect_in_channels: int | None = None,
) -> nn.Module:
    """Rebuild the exact model a checkpoint holds, in eval mode, on ``device``.

    The model has ``.config``, ``.info`` and ``.card``.

    Parameters
    ----------
    path
        A checkpoint file (or an already read :class:`Checkpoint`).
    device
        Where to put the weights.
    expect_task
        Raise :class:`TaskMismatchError` unless the checkpoint is for this task
        (``"neurons"``, ``"mitochondria"``, ``"semantic"``, ``"reconstruction"``, ``"encoder"``).
    expect_in_channels
        Raise :class:`ChannelMismatchError` unless the model takes this many channels.
    """
    ckpt = path if isinstance(path, Checkpoint) and path.tensors else load_checkpoint(getattr(path, "path", path))
    if expect_task is not None and ckpt.info.task != expect_task:
        raise TaskMismatchError(
            f"checkpoint {ckpt.path} was trained for {ckpt.info.task!r} ({ckpt.info.target}: "
            f"{', '.join(ckpt.info.channel_names)}), not {expect_task!r}; choose a {expect_task} checkpoint "
            f"or fine-tune one"
        )
    if expect_in_channels is not None and ckpt.info.in_channels != expect_in_channels:
        raise ChannelMismatchError(
            f"checkpoint {ckpt.path} takes {ckpt.info.in_channels} input channel(s), the data has "
            f"{expect_in_channels}; pick one channel of the image or a matching checkpoint"
        )
    model = build_model(ckpt.config, ckpt.info)
    try:
        model.load_state_dict(ckpt.tensors, strict=True)
    except RuntimeError as err:
        raise CorruptCheckpointError(
            f"checkpoint {ckpt.path}: its weights do not fit its own config ({ckpt.config.arch}): "
            f"{str(err).splitlines()[0]}"
        ) from None
    model.info = ckpt.info  # exactly as saved
    model.card = ckpt.card
    return model.to(device).eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of any weights file: a napari-emseg checkpoint or plain safetensors (no metadata
    needed), or a third-party ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``
    (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"weights file {path}: no such file")
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CorruptCheckpointError(f"weights file {path} is damaged ({err})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickled code; zip errors for damage
        raise CorruptCheckpointError(
            f"weights file {path} cannot be read safely ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "only plain tensor files are accepted, never pickled objects"
        ) from None
    for key in ("state_dict", "model", "module", "teacher", "student"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NotACheckpointError(f"weights file {path} holds no mapping of tensors")
    return dict(obj)


# -- encoder transplant -------------------------------------------------------------------------
def adapt_kernel(weight: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A convolution kernel moved between 2D and 3D networks of the same layout (else unchanged).

    3D -> 2D (``(O, I, kz, ky, kx)`` to ``(O, I, ky, kx)``): summed over ``kz``, so the 2D
    convolution of a slice equals the 3D one of a volume that is constant along z.
    2D -> 3D: repeated over ``kz`` and divided by it (I3D inflation), the same identity read the
    other way. Transferring between 2D and 3D encoders this way keeps what the filters learnt.
    """
    shape = tuple(int(v) for v in shape)
    if tuple(weight.shape) == shape or weight.ndim < 4 or abs(weight.ndim - len(shape)) != 1:
        return weight
    if weight.ndim == len(shape) + 1 and tuple(weight.shape[:2]) + tuple(weight.shape[3:]) == shape:
        return weight.sum(dim=2)
    if len(shape) == weight.ndim + 1 and shape[:2] + shape[3:] == tuple(weight.shape):
        kz = shape[2]
        return weight.unsqueeze(2).repeat(1, 1, kz, *([1] * (weight.ndim - 2))) / kz
    return weight


@dataclass(frozen=True)
class TransplantReport:
    """Outcome of :func:`transplant_encoder`: target keys loaded, target keys under the part that
    the source lacked (left as initialised), and source keys the model has no place for."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors, {len(self.missing)} missing "
                f"{list(self.missing[:3])}, {len(self.unexpected)} unexpected {list(self.unexpected[:3])}")


def transplant_encoder(
    model: nn.Module,
    source: str | Path | Checkpoint | nn.Module | Mapping[str, torch.Tensor],
    *,
    part: str = "encoder",
) -> TransplantReport:
    """Load pretrained encoder weights into a segmentation model's ``part`` (in place).

    Parameters
    ----------
    model
        A UNETR, ResUNet3D or TransUNet2D (anything with the submodule ``part``).
    source
        A checkpoint of a bare encoder (``vit3d``: its keys are the encoder's) or of a whole
        network (keys under ``encoder.``: a UNETR, an MS-Con ResUNet, a RETINA TransUNet), a
        plain safetensors or ``.pth`` file, a module or a state dict.
    part
        The dotted submodule to fill: ``"encoder"`` (default) or e.g. ``"encoder.transformer"``
        (RETINA transfers only the transformer layers).

    Returns
    -------
    TransplantReport

    Raises
    ------
    ChannelMismatchError
        The source takes another number of input channels.
    TransplantError
        A tensor's shape differs (other patch size, width or depth layout), or nothing matched.
    """
    tensors, name, src_cfg, src_info = _source(source)
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    info = getattr(model, "info", None)
    if src_info is not None and info is not None and src_info.in_channels != info.in_channels:
        raise ChannelMismatchError(
            f"encoder {name} takes {src_info.in_channels} input channel(s), the model {info.in_channels}"
        )
    bare = (src_cfg is not None and src_cfg.arch == "vit3d") or (
        src_cfg is None and not any(k.startswith("encoder.") for k in tensors))
    if bare:
        tensors = {f"encoder.{k}": v for k, v in tensors.items()}
    prefix = part.rstrip(".") + "."
    offered = {k: v for k, v in tensors.items() if k.startswith(prefix)}
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    if not target:
        raise TransplantError(f"the model has no submodule {part!r} to load an encoder into")
    common = sorted(set(offered) & set(target))
    offered.update({k: adapt_kernel(offered[k], target[k].shape) for k in common})
    wrong = [k for k in common if offered[k].shape != target[k].shape]
    if wrong:
        detail = "; ".join(f"{k}: {tuple(offered[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:4])
        hint = ""
        if src_cfg is not None and getattr(model, "config", None) is not None:
            a, b = src_cfg, model.config
            hint = (f" (encoder: {a.arch} {a.vit_size} patch {a.patch_size} widths {a.widths}; model: "
                    f"{b.arch} {b.vit_size} patch {b.patch_size} widths {b.widths})")
        raise TransplantError(
            f"encoder {name} does not fit the model: {len(wrong)} tensor shape(s) differ, {detail}{hint}; "
            "build the model with the encoder's size and patch (segmentation_config(checkpoint.config, ...))"
        )
    if not common:
        raise TransplantError(
            f"encoder {name}: none of its {len(tensors)} tensors belongs to the model's {part!r} "
            f"(source keys e.g. {sorted(tensors)[:3]}, model keys e.g. {sorted(target)[:3]})"
        )
    model.load_state_dict({k: offered[k] for k in common}, strict=False)
    report = TransplantReport(
        loaded=tuple(common),
        missing=tuple(sorted(set(target) - set(offered))),
        unexpected=tuple(sorted(set(offered) - set(target))),
    )
    logger.info("encoder %s -> %s: %s", name, part, report)
    return report


def _source(source) -> tuple[dict[str, torch.Tensor], str, ModelConfig | None, ModelInfo | None]:
    if isinstance(source, Checkpoint):
        ckpt = source if source.tensors else load_checkpoint(source.path)
        return dict(ckpt.tensors), str(ckpt.path), ckpt.config, ckpt.info
    if isinstance(source, nn.Module):
        source = getattr(source, "module", source)
        return (dict(source.state_dict()), type(source).__name__, getattr(source, "config", None),
                getattr(source, "info", None))
    if isinstance(source, Mapping):
        return dict(source), "state dict", None, None
    path = Path(source)
    try:
        ckpt = load_checkpoint(path)
    except NotACheckpointError:
        return read_state_dict(path), str(path), None, None
    return dict(ckpt.tensors), str(path), ckpt.config, ckpt.info

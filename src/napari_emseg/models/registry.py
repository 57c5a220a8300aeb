"""The encoder catalogue: what each pretrained (or scratch) encoder is and where it comes from.

Sources
-------
``bundled``
    Checkpoints shipped inside the package: every ``weights/<name>.safetensors`` written by
    :func:`~.checkpoint.save_checkpoint` is listed automatically, described by the card in its
    header (optionally completed by a neighbouring ``weights/<name>.card.json``). Adding an
    encoder is dropping such a file there; no code changes.
``download``
    ``<name>.download.json`` files (in the bundled or the local folder) give a URL, its sha256
    and the card; :func:`fetch_encoder` downloads with pooch into :func:`cache_dir` and checks
    the checksum.
``local``
    Checkpoints the user keeps in ``<cache_dir>/encoders/``, or any path given directly to
    :func:`resolve_encoder`.
``scratch``
    Randomly initialised architectures, listed as such and never as pretrained.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

from torch import nn

from .build import ModelConfig, build_model, parameter_count_on_meta, segmentation_config
from .checkpoint import TransplantReport, load_checkpoint, transplant_encoder
from .errors import CheckpointError, DownloadError, ModelError, UnknownEncoderError
from .inflate import INFLATABLE
from .info import ModelInfo

__all__ = [
    "EncoderEntry", "list_encoders", "get_encoder", "fetch_encoder", "resolve_encoder", "model_for_encoder",
    "cache_dir", "bundled_dir", "local_dir", "SCRATCH", "default_encoder", "AUTO",
]

logger = logging.getLogger(__name__)

Source = Literal["bundled", "download", "local", "scratch"]

#: name -> (config of the segmentation network, family, description)
SCRATCH: dict[str, tuple[ModelConfig, str, str]] = {
    **{
        f"scratch-vit3d-{size}": (ModelConfig(arch="unetr", vit_size=size), f"ViT-3D {size} (UNETR)",
                                  f"randomly initialised ViT-{size} UNETR, patch 1x16x16")
        for size in ("micro", "tiny", "small", "base")
    },
    "scratch-resunet": (ModelConfig(arch="resunet"), "ResUNet-3D", "randomly initialised residual 3D U-Net"),
    "scratch-unet2d": (ModelConfig(arch="unet2d"), "U-Net-2D (MONAI BasicUNet)",
                       "randomly initialised plain 2D U-Net, slice-wise: the default for separate images and serial "
                       "sections"),
    "scratch-resunet2d": (ModelConfig(arch="resunet2d"), "ResUNet-2D",
                          "randomly initialised residual 2D U-Net, slice-wise (separate images, serial sections)"),
    "scratch-transunet2d": (ModelConfig(arch="transunet2d"), "TransUNet-2D",
                            "randomly initialised 2D TransUNet (tiny transformer), slice-wise"),
}


@dataclass(frozen=True)
class EncoderEntry:
    """One catalogue entry.

    Attributes
    ----------
    name, source
        Catalogue name; ``"bundled"``, ``"download"``, ``"local"`` or ``"scratch"``.
    family, method, data
        Architecture family; pretraining method (``"none"`` for scratch); pretraining data.
    patch_size, tile, voxel_size
        ViT patch ``(z, y, x)`` (``None`` for CNNs); the input patch it was trained on; voxel
        size in nm it expects (``None``: unknown / any).
    params
        Parameters of the encoder (the part that transfers).
    licence, location, sha256
        Licence of the weights; file path or URL; checksum (downloads).
    config
        The encoder's :class:`ModelConfig` (for scratch: the segmentation network's).
    card
        The full model card.
    """

    name: str
    source: Source
    family: str
    method: str
    data: str
    patch_size: tuple[int, int, int] | None
    tile: tuple[int, int, int] | None
    voxel_size: tuple[float, float, float] | None
    params: int
    licence: str
    location: str
    config: ModelConfig
    sha256: str | None = None
    description: str = ""
    card: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pretrained(self) -> bool:
        return self.source != "scratch"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "source", "family", "method", "data", "patch_size", "tile",
                                             "voxel_size", "params", "licence", "location", "sha256", "description")}
        out["pretrained"] = self.pretrained
        out["arch"] = self.config.arch
        out["config"] = self.config.to_dict()
        out["card"] = self.card
        return json.loads(json.dumps(out, default=list))


# -- folders ----------------------------------------------------------------------------------------
def bundled_dir() -> Path:
    """The package's ``weights/`` folder."""
    return Path(__file__).with_name("weights")


def cache_dir() -> Path:
    """Where downloads and local encoders live: ``$NAPARI_EMSEG_CACHE`` if set (read at call
    time), else the OS cache folder for napari-emseg."""
    env = os.environ.get("NAPARI_EMSEG_CACHE")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-emseg"))


def local_dir() -> Path:
    """``<cache_dir>/encoders``: checkpoints placed here are listed as ``local``."""
    return cache_dir() / "encoders"


# -- listing ----------------------------------------------------------------------------------------
def list_encoders(*, bundled: Path | None = None, local: Path | None = None,
                  include_scratch: bool = True) -> list[EncoderEntry]:
    """All catalogue entries: pretrained ones (bundled, download, local) first, then scratch.

    ``bundled`` / ``local`` replace the default folders (for tests and custom installs).
    Unreadable files are skipped with a warning.
    """
    entries: list[EncoderEntry] = []
    for folder, source in ((bundled or bundled_dir(), "bundled"), (local or local_dir(), "local")):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            try:
                entries.append(_entry_from_checkpoint(path, source))
            except (CheckpointError, OSError, ValueError) as err:
                logger.warning("skipping encoder %s: %s", path, err)
        for path in sorted(folder.glob("*.download.json")):
            try:
                entries.append(_entry_from_download(path))
            except (OSError, ValueError, KeyError, ModelError) as err:
                logger.warning("skipping download entry %s: %s", path, err)
    if include_scratch:
        entries += [_scratch_entry(name) for name in SCRATCH]
    return entries


def get_encoder(name: str, **dirs: Any) -> EncoderEntry:
    """The entry called ``name`` (see :func:`list_encoders` for ``dirs``)."""
    entries = list_encoders(**dirs)
    for entry in entries:
        if entry.name == name:
            return entry
    raise UnknownEncoderError(
        f"no encoder called {name!r}; known: {', '.join(e.name for e in entries)} "
        "(or give the path of a checkpoint file)"
    )


def fetch_encoder(entry: EncoderEntry | str, *, cache: Path | None = None, progressbar: bool = False) -> Path:
    """The local file of a pretrained entry, downloading (and checksum-checking) it if needed."""
    if isinstance(entry, str):
        entry = get_encoder(entry)
    if entry.source == "scratch":
        raise ModelError(f"{entry.name} is randomly initialised: it has no weights file to fetch")
    if entry.source != "download":
        return Path(entry.location)
    import pooch

    target = (cache or cache_dir()) / "downloads"
    try:
        path = pooch.retrieve(entry.location, known_hash=f"sha256:{entry.sha256}", fname=f"{entry.name}.safetensors",
                              path=target, downloader=_downloader(entry.location, progressbar), progressbar=progressbar)
    except ValueError as err:
        raise DownloadError(
            f"encoder {entry.name}: the file from {entry.location} does not match its published checksum "
            f"and was discarded ({err}); retry later, or report it if it persists"
        ) from None
    except Exception as err:  # network and IO failures from requests / urllib / shutil
        raise DownloadError(f"encoder {entry.name}: download from {entry.location} failed ({err})") from None
    return Path(path)


def resolve_encoder(name_or_path: str | os.PathLike) -> Path | ModelConfig:
    """What fine-tuning starts from: a checkpoint ``Path`` (bundled, downloaded or a user's file)
    or, for a scratch entry, the :class:`ModelConfig` of the network to initialise randomly."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in SCRATCH:
        return SCRATCH[name][0]
    try:
        return fetch_encoder(get_encoder(name))
    except UnknownEncoderError:
        raise UnknownEncoderError(
            f"{name!r} is neither a file nor an encoder in the catalogue; list them with "
            "`napari-emseg encoders`"
        ) from None


#: the encoder name that means "the best one for the data" (:func:`default_encoder`)
AUTO = "auto"

#: preferred starting points per network dimensionality and task, best first: the first one the
#: catalogue holds *as a network of that dimensionality* is used. A 2D network for mitochondria or
#: neurons starts from the bundled one-click model of that task (a plain 2D U-Net trained on fully
#: painted real ssTEM; fine-tuning continues it), which beats a network trained from scratch on a
#: few painted slices of unseen EM (docs/benchmarks.md, "Few painted slices"). Other 2D tasks, and
#: these two without their model, start from the U-Net pretrained by masked inpainting (docs/pretraining.md).
MASKED2D = "masked2d-unet2d-isbi-vnc"
PREFERRED: dict[tuple[int, str | None], tuple[str, ...]] = {
    (2, "mitochondria"): ("emseg-mito-vnc", MASKED2D, "scratch-unet2d"),
    (2, "neurons"): ("emseg-boundaries-em", MASKED2D, "scratch-unet2d"),
    (2, None): (MASKED2D, "scratch-unet2d"),
    (3, None): ("mscon-resunet-small-drosophila-vnc", "scratch-resunet"),
}

#: architectures whose whole network is what transfers (a bare ViT; the plain 2D U-Net, which
#: has no separate encoder and is continued whole)
WHOLE_NETWORK = frozenset({"vit3d", "unet2d"})

#: architectures that are 2D networks (run slice by slice on volumes)
ARCHS_2D = frozenset({"unet2d", "resunet2d", "transunet2d"})


def default_encoder(dims: int, task: str | None = None) -> str:
    """The encoder ``"auto"`` stands for with a ``dims``-D network for ``task``: the first of
    :data:`PREFERRED` that the catalogue holds (a task-specific entry only if it is a network of
    that dimensionality; residual U-Net encoders fit either)."""
    entries = {e.name: e for e in list_encoders()}
    key = (int(dims), task) if (int(dims), task) in PREFERRED else (int(dims), None)
    for name in PREFERRED[key]:
        entry = entries.get(name)
        if entry is not None and _fits(entry, int(dims), specific=key[1] is not None):
            return name
    return PREFERRED[key][-1]


def _fits(entry: EncoderEntry, dims: int, specific: bool) -> bool:
    if not specific or entry.source == "scratch":
        return True
    return (entry.config.arch in ARCHS_2D) == (dims == 2)


def model_for_encoder(name_or_path: str | os.PathLike, info: ModelInfo, *, part: str = "encoder",
                      dims: int | None = None, inflate: str = "centre",
                      **overrides: Any) -> tuple[nn.Module, TransplantReport | None]:
    """A segmentation model for ``info`` on the encoder ``name_or_path``, pretrained weights
    transplanted into ``part`` (``None`` report for scratch). ``overrides`` change
    :class:`ModelConfig` fields (e.g. ``feature_size=32``). ``dims`` (2 or 3) switches a
    residual U-Net encoder to the 2D or 3D network (kernels deflated or inflated, see
    :func:`~.checkpoint.adapt_kernel`). With ``dims=3`` a 2D encoder that has a 3D counterpart
    (:data:`~.inflate.INFLATABLE`: a residual 2D U-Net, a RETINA TransUNet) is inflated into it
    (:mod:`.inflate`, kernels by ``inflate``: ``"average"`` or ``"centre"``); the model then
    carries ``model.inflation`` (what its card records). Other families keep their own
    dimensionality."""
    src = resolve_encoder(name_or_path)
    if isinstance(src, ModelConfig):
        return build_model(with_dims(src, dims).replace(**overrides), info), None
    ckpt = load_checkpoint(src)
    if dims == 3 and ckpt.config.arch in INFLATABLE:
        return _inflated(ckpt, info, inflate, overrides)
    cfg = with_dims(segmentation_config(ckpt.config, info.out_channels), dims)
    model = build_model(cfg.replace(**overrides), info)
    if ckpt.config.arch == "unet2d":  # no separate encoder: all of it but the head (.whole_network)
        from .whole_network import transplant_whole

        return model, transplant_whole(model, ckpt)
    return model, transplant_encoder(model, ckpt, part=part)


def _inflated(ckpt: Any, info: ModelInfo, mode: str, overrides: Mapping[str, Any]) -> tuple[nn.Module, TransplantReport]:
    """The 3D network for a 2D encoder checkpoint, its weights inflated (:mod:`.inflate`)."""
    from .errors import TransplantError
    from .inflate import describe, inflate_tensors, inflated_config, source_tensors

    model = build_model(inflated_config(ckpt.config, info.out_channels).replace(**overrides), info)
    offered, part = source_tensors(ckpt.config.arch, ckpt.tensors)
    target = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    loaded = inflate_tensors(offered, target, mode)  # type: ignore[arg-type]
    if not loaded:
        raise TransplantError(f"encoder {ckpt.path}: none of its tensors fits the inflated {model.config.arch}")
    model.load_state_dict(loaded, strict=False)
    missing = sorted(set(target) - set(loaded))
    report = TransplantReport(loaded=tuple(sorted(loaded)), missing=tuple(missing),
                              unexpected=tuple(sorted(set(offered) - set(loaded))))
    model.inflation = {**describe(ckpt.config.arch, model.config.arch, mode, len(loaded), missing),  # type: ignore[arg-type]
                       "part": part}
    logger.info("encoder %s inflated into a %s: %s", ckpt.path, model.config.arch, report)
    return model, report


def with_dims(cfg: ModelConfig, dims: int | None) -> ModelConfig:
    """``cfg`` as the 2D or 3D residual U-Net (``dims``); other architectures unchanged."""
    if dims == 2 and cfg.arch == "resunet":
        return cfg.replace(arch="resunet2d")
    if dims == 3 and cfg.arch == "resunet2d":
        return cfg.replace(arch="resunet")
    return cfg


# -- entries ----------------------------------------------------------------------------------------
def _entry(name: str, source: Source, cfg: ModelConfig, info: ModelInfo | None, card: Mapping[str, Any],
           params: int, location: str, sha256: str | None = None) -> EncoderEntry:
    vit = cfg.arch in ("vit3d", "unetr")
    voxel = card.get("voxel_size", info.voxel_size if info else None)
    return EncoderEntry(
        name=name, source=source,
        family=str(card.get("family", cfg.arch)),
        method=str(card.get("method", "unknown")),
        data=str(card.get("data", "unknown")),
        patch_size=tuple(cfg.patch_size) if vit else None,
        tile=tuple(card.get("tile", info.tile if info else ())) or None,
        voxel_size=tuple(voxel) if voxel else None,
        params=int(params), licence=str(card.get("licence", card.get("license", "unknown"))),
        location=location, config=cfg, sha256=sha256,
        description=str(card.get("description", "")), card=dict(card),
    )


def _entry_from_checkpoint(path: Path, source: Source) -> EncoderEntry:
    ckpt = load_checkpoint(path, tensors=False)
    card = dict(ckpt.card)
    side = path.with_name(path.name[: -len(".safetensors")] + ".card.json")
    if side.is_file():
        card.update(json.loads(side.read_text()))
    name = str(card.get("name", path.stem))
    prefix = "" if ckpt.config.arch in WHOLE_NETWORK else "encoder."
    return _entry(name, source, ckpt.config, ckpt.info, card, _header_params(path, prefix), str(path))


def _entry_from_download(path: Path) -> EncoderEntry:
    spec = json.loads(path.read_text())
    missing = {"name", "url", "sha256", "config", "card"} - set(spec)
    if missing:
        raise ValueError(f"missing field(s) {sorted(missing)}")
    cfg = ModelConfig.from_dict(spec["config"], strict=False)
    info = ModelInfo.from_dict(spec["info"], strict=False) if spec.get("info") else None
    prefix = "" if cfg.arch in WHOLE_NETWORK else "encoder"
    params = int(spec.get("params") or parameter_count_on_meta(cfg, prefix))
    return _entry(spec["name"], "download", cfg, info, spec["card"], params, spec["url"], spec["sha256"].lower())


def _scratch_entry(name: str) -> EncoderEntry:
    cfg, family, description = SCRATCH[name]
    card = {"family": family, "method": "none (random initialisation)", "data": "none", "licence": "n/a",
            "description": description}
    # a plain U-Net has no separate encoder: its whole parameter count
    prefix = "" if cfg.arch == "unet2d" else "encoder"
    return _entry(name, "scratch", cfg, None, card, parameter_count_on_meta(cfg, prefix), "")


def _header_params(path: Path, prefix: str) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(prefix))


def _downloader(url: str, progressbar: bool):
    """pooch's downloader for ``url``; ``file://`` URLs (mirrors on shared drives) are copied."""
    if urlparse(url).scheme != "file":
        return None

    def copy(url: str, output_file: Any, pooch: Any, check_only: bool = False) -> bool | None:
        src = Path(url2pathname(urlparse(url).path))
        if check_only:
            return src.is_file()
        if hasattr(output_file, "write"):
            with open(src, "rb") as f:
                shutil.copyfileobj(f, output_file)
        else:
            shutil.copyfile(src, output_file)
        return None

    return copy

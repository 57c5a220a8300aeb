"""Export a napari-emseg checkpoint as a bioimage.io model package (spec 0.5).

Export (:func:`export_bioimageio`) writes a zip in the current model spec (0.5): ``rdf.yaml``,
``pytorch_state_dict`` weights whose architecture is :class:`~.arch.EmsegNetwork`
(``import_from: napari_emseg.models.bioimageio.arch``), TorchScript weights where tracing the
network gives the same maps at another input size, a test input (a small synthetic EM volume)
and the output the model itself predicts for it, a cover, a README from the model card, and the
original checkpoint as an attachment. The card's data, licence and citations are carried over.

Import is in :mod:`.package`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .package import is_bioimageio_package, is_ours

__all__ = ["export_bioimageio", "spdx_licence", "PACKAGE_FORMAT"]

logger = logging.getLogger(__name__)

PACKAGE_FORMAT = "napari-emseg.bioimageio/1"
FORMAT_VERSION = "0.5.4"
PROJECT_URL = "https://github.com/napari-emseg/napari-emseg"
_SPDX = re.compile(r"\b(CC-BY(?:-NC)?(?:-SA|-ND)?-[1-4]\.0|CC0-1\.0|MIT|BSD-[23]-Clause|Apache-2\.0|GPL-3\.0"
                   r"(?:-only|-or-later)?)\b")
_CC_TEXT = re.compile(r"\bCC[ -]BY((?:[ -](?:NC|SA|ND))*)[ -]([1-4]\.0)\b", re.IGNORECASE)
_DOI = re.compile(r"doi:\s*(10\.\d{4,9}/[^\s,;)]+)", re.IGNORECASE)


def spdx_licence(card: Mapping[str, Any], licence: str | None = None) -> str:
    """The SPDX id for the package: ``licence`` if given, else one named in the card's licence text."""
    if licence:
        return licence
    text = str(card.get("license") or card.get("licence") or "")
    m = _SPDX.search(text)
    if m:
        return m.group(1)
    m = _CC_TEXT.search(text)
    if m:
        parts = [s.upper() for s in re.split(r"[ -]", m.group(1)) if s]
        return "-".join(["CC-BY", *parts, m.group(2)])
    from ...errors import EmsegError

    raise EmsegError(f"the checkpoint's licence ({text or 'none'!r}) names no SPDX licence, which bioimage.io "
                     "requires: pass --license ID (e.g. CC-BY-4.0, MIT) that the weights' and data's terms allow")


def _citations(card: Mapping[str, Any]) -> list[dict[str, str]]:
    cites = [{"text": "napari-emseg: EM segmentation with pretrained encoders in napari", "url": PROJECT_URL}]
    for c in card.get("cite") or card.get("citations") or []:
        if isinstance(c, Mapping) and c.get("text") and (c.get("doi") or c.get("url")):
            cites.append({k: str(c[k]) for k in ("text", "doi", "url") if c.get(k)})
    for field in ("data", "licence", "license", "method"):
        text = str(card.get(field) or "")
        for doi in _DOI.findall(text):
            cites.append({"text": f"{field}: {text[:200]}", "doi": doi.rstrip(".")})
    seen, out = set(), []
    for c in cites:
        key = c.get("doi") or c.get("url")
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _test_shape(info: Any) -> tuple[int, ...]:
    """A small input every network accepts: ``(z, y, x)`` (3D) or ``(y, x)`` (2D), y == x."""
    mz, my, mx = (int(v) for v in info.input_multiple)
    m = int(np.lcm(my, mx))
    side = max(m, -(-64 // m) * m)
    if info.spatial_dims == 2:
        return (side, side)
    z = max(mz, -(-min(int(info.tile[0]), 8) // mz) * mz)
    return (z, side, side)


def _preprocessing(norm: Any, axes: Sequence[str]) -> tuple[list[dict[str, Any]], Any]:
    """The bioimage.io steps of napari-emseg's normalisation, and the same in numpy."""
    sign = -1.0 if norm.invert else 1.0
    if norm.lo is not None and norm.hi is not None:
        lo, hi = float(norm.lo), float(norm.hi)
        gain, offset = sign * 2.0 / (hi - lo), sign * (-2.0 * lo / (hi - lo) - 1.0)
        steps = [{"id": "scale_linear", "kwargs": {"gain": gain, "offset": offset}}]
        return steps, lambda x: (x * gain + offset).astype(np.float32)
    p0, p1 = (float(v) for v in norm.percentiles)
    eps = 1e-6
    steps = [
        {"id": "scale_range", "kwargs": {"axes": list(axes), "min_percentile": p0, "max_percentile": p1, "eps": eps}},
        {"id": "scale_linear", "kwargs": {"gain": 2.0 * sign, "offset": -1.0 * sign}},
    ]

    def apply(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x.astype(np.float64), [p0, p1])
        y = (x - lo) / (hi - lo + eps)
        return (y * 2.0 * sign - sign).astype(np.float32)

    return steps, apply


def _cover(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Input and first output channel side by side (middle slice), uint8, 2:1."""
    def u8(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        return np.round((a - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)

    if raw.ndim == 3:
        raw, out = raw[raw.shape[0] // 2], out[:, out.shape[1] // 2]
    return np.concatenate([u8(raw), u8(out[0])], axis=1)


def export_bioimageio(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = (),
    licence: str | None = None,
    torchscript: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a napari-emseg checkpoint as a bioimage.io model package (a ``.zip``).

    Parameters
    ----------
    checkpoint
        A ``.safetensors`` checkpoint with a prediction head (not a bare ``vit3d`` encoder).
    out
        The zip to write (atomically).
    name, description, authors
        Override the card's name and description; the package's authors (default: the card's).
    licence
        SPDX licence id; by default the one the card's licence text names (else an error).
    torchscript
        Add TorchScript weights when the traced network reproduces the maps at another size.
    overwrite
        Replace an earlier package napari-emseg wrote at ``out``.

    Returns
    -------
    Path
        The written package.
    """
    import torch
    import yaml

    from ... import __version__
    from ..._atomic import atomic_path
    from ...data.synthetic import make_synthetic_em
    from ...errors import EmsegError
    from ..checkpoint import load_checkpoint
    from .arch import EmsegNetwork

    out = Path(os.fspath(out))
    if out.exists():
        if not (is_bioimageio_package(out) and is_ours(out)):
            raise EmsegError(f"--out {out}: exists and is not a package napari-emseg wrote; it is never replaced")
        if not overwrite:
            raise EmsegError(f"--out {out}: exists (an earlier export); pass --overwrite to replace it")
    ckpt = load_checkpoint(checkpoint)
    cfg, info, card = ckpt.config, ckpt.info, dict(ckpt.card)
    if cfg.arch == "vit3d" or info.target == "features":
        raise EmsegError(f"{checkpoint} is a bare encoder (its output is features at patch resolution): export a "
                         "model fine-tuned from it (napari-emseg finetune --encoder ...)")
    licence_id = spdx_licence(card, licence)
    net = EmsegNetwork(cfg.to_dict(), info.to_dict()).eval()
    net.net.load_state_dict(ckpt.tensors, strict=True)
    spatial = ("y", "x") if info.spatial_dims == 2 else ("z", "y", "x")
    shape = _test_shape(info)
    em = make_synthetic_em((1 if len(shape) == 2 else shape[0], *shape[-2:]), seed=0)
    raw = np.asarray(em.raw, dtype=np.float32)
    raw = raw[0] if len(shape) == 2 else raw
    steps, prep = _preprocessing(info.norm, spatial)
    with torch.no_grad():
        test_out = net(torch.from_numpy(prep(raw)[None, None])).numpy().astype(np.float32)
    vs = info.voxel_size or tuple(float(v) for v in em.voxel_size)
    scale = dict(zip(("z", "y", "x"), (float(v) for v in vs)))
    mult = dict(zip(("z", "y", "x"), (int(v) for v in info.input_multiple)))
    in_axes: list[dict[str, Any]] = [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}]
    out_axes: list[dict[str, Any]] = [{"type": "batch"},
                                      {"type": "channel", "channel_names": [_ident(c) for c in info.channel_names]}]
    for a in spatial:
        base = {"type": "space", "id": a, "scale": scale[a], "unit": "nanometer"}
        # twice the multiple: the coarsest level keeps more than one voxel (instance norm needs it)
        in_axes.append({**base, "size": {"min": 2 * mult[a], "step": mult[a]}})
        out_axes.append({**base, "size": {"tensor_id": "raw", "axis_id": a}})
    stem = _ident(name or card.get("name") or Path(checkpoint).stem)
    ckpt_name = f"{stem}.safetensors"
    torch_version = torch.__version__.split("+")[0]
    with tempfile.TemporaryDirectory() as tmpdir:
        d = Path(tmpdir)
        np.save(d / "test_input.npy", raw[None, None])
        np.save(d / "test_output.npy", test_out)
        torch.save(net.state_dict(), d / "weights.pt")
        (d / ckpt_name).write_bytes(Path(ckpt.path).read_bytes())
        (d / "environment.yaml").write_text(yaml.safe_dump({
            "name": "napari-emseg", "channels": ["conda-forge"],
            "dependencies": ["python>=3.10", "pip", {"pip": [f"napari-emseg>={__version__}", f"torch>={torch_version}"]}],
        }, sort_keys=False))
        import imageio.v3 as iio

        iio.imwrite(d / "cover.png", _cover(raw, test_out[0]))
        (d / "README.md").write_text(_readme(stem, card, info, cfg, licence_id), encoding="utf-8")
        weights: dict[str, Any] = {"pytorch_state_dict": {
            "source": "weights.pt", "sha256": _sha(d / "weights.pt"),
            "architecture": {"callable": "EmsegNetwork", "import_from": "napari_emseg.models.bioimageio.arch",
                             "kwargs": {"config": cfg.to_dict(), "info": info.to_dict()}},
            "pytorch_version": torch_version,
            "dependencies": {"source": "environment.yaml", "sha256": _sha(d / "environment.yaml")},
        }}
        if torchscript and _trace(net, raw.shape, d / "weights_torchscript.pt", info):
            weights["torchscript"] = {"source": "weights_torchscript.pt", "sha256": _sha(d / "weights_torchscript.pt"),
                                      "pytorch_version": torch_version, "parent": "pytorch_state_dict"}
        rdf = {
            "type": "model", "format_version": FORMAT_VERSION, "name": _title(stem),
            "description": str(description or card.get("description") or
                               f"napari-emseg {info.task} model ({info.target})")[:1000],
            "authors": [{"name": a} for a in (authors or _card_authors(card))],
            "cite": _citations(card), "license": licence_id,
            "documentation": "README.md", "covers": ["cover.png"],
            "tags": sorted({"napari-emseg", "electron-microscopy", "pytorch", f"{info.spatial_dims}d", info.task,
                            info.target, cfg.arch}),
            "attachments": [{"source": ckpt_name, "sha256": _sha(d / ckpt_name)}],
            "inputs": [{"id": "raw", "description": "EM intensities (any range; normalised by the preprocessing)",
                        "axes": in_axes, "test_tensor": {"source": "test_input.npy", "sha256": _sha(d / "test_input.npy")},
                        "data": {"type": "float32"}, "preprocessing": steps}],
            "outputs": [{"id": "prediction", "description": f"{info.target} maps in [0, 1]: {', '.join(info.channel_names)}",
                         "axes": out_axes, "data": {"type": "float32", "range": [0.0, 1.0]},
                         "test_tensor": {"source": "test_output.npy", "sha256": _sha(d / "test_output.npy")}}],
            "weights": weights,
            "config": {"napari-emseg": {"format": PACKAGE_FORMAT, "checkpoint": ckpt_name, "sha256": _sha(d / ckpt_name),
                                        "version": __version__, "task": info.task, "target": info.target,
                                        "data": str(card.get("data", "")), "licence": str(card.get("licence", "")),
                                        "card": json.loads(json.dumps(card, default=str))}},
        }
        (d / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8")
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(d.iterdir()):
                z.write(f, f.name)
    logger.info("wrote bioimage.io package %s (%s)", out, ", ".join(weights))
    return out


def _trace(net: Any, shape: tuple[int, ...], path: Path, info: Any) -> bool:
    """TorchScript of ``net`` if the traced module matches the eager one at the test size and a larger one."""
    import torch

    m = [int(v) for v in info.input_multiple][-len(shape):]
    other = tuple(s + k for s, k in zip(shape, m))
    gen = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(net, torch.randn((1, 1, *shape), generator=gen), check_trace=False)
            for s in (shape, other):
                x = torch.randn((1, 1, *s), generator=gen)
                if not torch.allclose(traced(x), net(x), atol=1e-4):
                    logger.info("TorchScript left out: the traced network differs at input %s", s)
                    return False
        traced.save(str(path))
    except Exception as err:  # noqa: BLE001 - tracing is best effort; state-dict weights remain
        logger.info("TorchScript left out: tracing failed (%s: %s)", type(err).__name__,
                    (str(err).strip().splitlines() or [""])[0])
        return False
    return True



def _card_authors(card: Mapping[str, Any]) -> list[str]:
    authors = card.get("authors")
    if isinstance(authors, str):
        return [authors]
    if isinstance(authors, Sequence) and authors:
        return [str(a.get("name", a)) if isinstance(a, Mapping) else str(a) for a in authors]
    return ["napari-emseg user"]


def _ident(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", str(text)).strip("_") or "model"


def _title(stem: str) -> str:
    """The package's name: 5 to 128 characters (bioimage.io's rule)."""
    title = stem.replace("_", " ")
    return (title if len(title) >= 5 else f"napari-emseg {title}")[:128]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _readme(stem: str, card: Mapping[str, Any], info: Any, cfg: Any, licence_id: str) -> str:
    rows = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in card.items() if not isinstance(v, Mapping))
    return (f"# {stem}\n\nA napari-emseg {info.task} model ({cfg.arch}) predicting {info.target}: "
            f"{', '.join(info.channel_names)}.\n\nLicence: {licence_id} (card: {card.get('licence', 'not given')}).\n\n"
            "Use it in napari-emseg as a checkpoint (`napari-emseg segment --model this.zip ...`), or in any "
            "bioimage.io tool (bioimageio.core runs the state-dict weights with napari-emseg installed, and the "
            "TorchScript weights anywhere).\n\n## Validation\n\nThe test input is a small synthetic EM volume; "
            "the test output is what this model predicted for it when it was exported. Check the package with "
            "`bioimageio test this.zip` (bioimageio.core).\n\n## Model card\n\n| field | value |\n|---|---|\n" + rows + "\n")

"""Reading bioimage.io packages: is a path one, and the napari-emseg checkpoint a package embeds.

Import is exact: a package written by ``napari-emseg export-model`` carries the original
checkpoint (``config: napari-emseg: checkpoint``), which is unpacked once into the cache and
used as it is. Packages made by other tools are refused with a clear error: their
architectures are not napari-emseg's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import NotACheckpointError

__all__ = ["is_bioimageio_package", "checkpoint_from_package", "is_ours", "RDF_NAMES"]

logger = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bioimage.io package: a zip holding ``rdf.yaml``, a folder with one, or the file."""
    p = Path(os.fspath(path))
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES)
    if p.is_file() and p.name in RDF_NAMES:
        return True
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as z:
                return any(n in z.namelist() for n in RDF_NAMES)
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def _is_zip(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() == ".zip"


def _root(p: Path) -> Path:
    return p if p.is_dir() else p.parent


def _read_package(p: Path) -> dict[str, Any]:
    """The package's description (``rdf.yaml``) as a dict."""
    import yaml

    if _is_zip(p):
        with zipfile.ZipFile(p) as z:
            rdf = yaml.safe_load(z.read(next(n for n in RDF_NAMES if n in z.namelist())))
    else:
        rdf = yaml.safe_load(next(_root(p) / n for n in RDF_NAMES if (_root(p) / n).is_file()).read_text("utf-8"))
    return rdf if isinstance(rdf, dict) else {}


def _member(p: Path, name: str, *, data: bool) -> tuple[int, bytes | None]:
    """Size of a file of the package, and its bytes when ``data``."""
    if _is_zip(p):
        with zipfile.ZipFile(p) as z:
            return z.getinfo(name).file_size, (z.read(name) if data else None)
    f = _root(p) / name
    return f.stat().st_size, (f.read_bytes() if data else None)


def checkpoint_from_package(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """The napari-emseg checkpoint inside a bioimage.io package exported by napari-emseg.

    It is unpacked once (checked against its SHA-256) into ``cache`` (default
    ``<cache_dir>/bioimageio/<sha256>/``) and its path returned; later calls find it there.

    Raises
    ------
    NotACheckpointError
        The package was not exported by napari-emseg (or holds no checkpoint).
    CorruptCheckpointError
        The embedded checkpoint does not match the SHA-256 the package declares.
    """
    p = Path(os.fspath(path))
    rdf = _read_package(p)
    ours = ((rdf.get("config") or {}).get("napari-emseg") or {}) if isinstance(rdf.get("config"), dict) else {}
    if not ours.get("checkpoint"):
        weights = ", ".join(sorted((rdf.get("weights") or {}).keys())) or "none"
        raise NotACheckpointError(
            f"{p} is a bioimage.io {rdf.get('type', 'resource')} ({rdf.get('name', 'unnamed')!r}, weights: {weights}) "
            "that napari-emseg did not export: its network is not one napari-emseg builds, so it cannot be "
            "fine-tuned or segmented with here; run it with bioimageio.core, or use a napari-emseg checkpoint "
            "or a package written by `napari-emseg export-model`")
    member, declared = str(ours["checkpoint"]), str(ours.get("sha256") or "")
    if cache is None:
        from ..registry import cache_dir

        cache = cache_dir() / "bioimageio"
    try:
        size, _ = _member(p, member, data=False)
        if declared:  # unpacked (and checked) before: no need to read the package again
            known = Path(cache) / declared[:16] / Path(member).name
            if known.is_file() and known.stat().st_size == size:
                return known
        _, data = _member(p, member, data=True)
    except (KeyError, OSError) as err:
        raise NotACheckpointError(f"{p}: its checkpoint {member!r} is missing ({err})") from None
    digest = hashlib.sha256(data).hexdigest()
    if declared and declared != digest:
        from ..errors import CorruptCheckpointError

        raise CorruptCheckpointError(f"{p}: its checkpoint {member!r} does not match its SHA-256; "
                                     "the package is damaged, download it again")
    target = Path(cache) / digest[:16] / Path(member).name
    from ..._atomic import atomic_path

    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    logger.info("unpacked the checkpoint of %s to %s", p, target)
    return target


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a package napari-emseg exported (its ``config`` has a ``napari-emseg`` section)."""
    try:
        rdf = _read_package(path)
    except Exception:  # noqa: BLE001 - unreadable: not provably ours
        return False
    return isinstance(rdf.get("config"), dict) and "napari-emseg" in rdf["config"]


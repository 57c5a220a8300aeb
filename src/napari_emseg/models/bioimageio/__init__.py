"""bioimage.io model packages: :func:`export_bioimageio` writes one from a checkpoint
(:mod:`.export`), :func:`checkpoint_from_package` reads the checkpoint one embeds (:mod:`.package`,
used by :func:`~napari_emseg.models.load_checkpoint`), :class:`~.arch.EmsegNetwork` is the
architecture the packages name. See docs/models.md.
"""

from __future__ import annotations

from .export import PACKAGE_FORMAT, export_bioimageio, spdx_licence
from .package import checkpoint_from_package, is_bioimageio_package

__all__ = ["export_bioimageio", "spdx_licence", "checkpoint_from_package", "is_bioimageio_package", "PACKAGE_FORMAT"]

"""What the widgets read off napari layers."""

from __future__ import annotations

from typing import Any


def layer_voxel_size(layer: Any) -> tuple[float, float, float] | None:
    """A layer's (z, y, x) scale as a voxel size, or ``None`` when napari's default (all 1) says nothing."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    if len(scale) < 3 or all(abs(s - 1.0) < 1e-9 for s in scale):
        return None
    return scale  # type: ignore[return-value]


def grayscale_layer(viewer: Any, image: Any) -> Any | None:
    """The layer to work on for ``image``: itself when it is grayscale; for a gray micrograph that
    napari opened as RGB(A) (PNG, JPEG and many TIFFs store gray as colour), a grayscale copy
    added to ``viewer`` once, named ``"NAME (gray)"``; ``None``, with a warning, for a real colour
    image (three channels that differ), which EM segmentation cannot use as it is.
    """
    if not getattr(image, "rgb", False):
        return image
    from napari.utils.notifications import show_info, show_warning

    from .._axes import gray_stored_as_colour

    name = f"{image.name} (gray)"
    if name in viewer.layers:
        return viewer.layers[name]
    if getattr(image, "multiscale", False):
        show_warning(f"napari-emseg: '{image.name}' is a multiscale colour image; convert it to one grayscale "
                     "channel first (napari-emseg segment --channel N reads one channel of a file)")
        return None
    if not gray_stored_as_colour(image.data, axis=-1):
        show_warning(f"napari-emseg: '{image.name}' is a colour image whose channels differ; EM segmentation "
                     "needs one grayscale channel: split its channels (right-click the layer > Split RGB) and choose one")
        return None
    layer = viewer.add_image(image.data[..., 0], name=name, scale=image.scale, translate=image.translate,
                             colormap="gray")
    show_info(f"napari-emseg: '{image.name}' is a gray image stored as colour; added '{name}' to work on")
    return layer


def chosen_grayscale(viewer: Any, combo: Any) -> Any | None:
    """``combo``'s image layer made grayscale by :func:`grayscale_layer`; when that added a gray
    copy, the combo chooses it (so painting, previews and suggestions all use it)."""
    image = combo.value
    if image is None:
        return None
    gray = grayscale_layer(viewer, image)
    if gray is not None and gray is not image:
        combo.reset_choices()
        combo.value = gray
    return gray

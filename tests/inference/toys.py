"""Tiny models with ``.info`` for inference tests (no dependency on napari_emseg.models' networks)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_emseg.data.normalize import intensity_range, normalize
from napari_emseg.models.info import ModelInfo


class Constant(nn.Module):
    """Predicts ``value`` everywhere (activation none)."""

    def __init__(self, value: float = 0.37, channels: int = 2, spatial_dims: int = 3, tile=(8, 32, 32)) -> None:
        super().__init__()
        self.value = value
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(
            task="mitochondria", target="bcd" if channels == 3 else "boundaries",
            channel_names=tuple(f"c{i}" for i in range(channels)), activation="none",
            spatial_dims=spatial_dims, input_multiple=(1, 8, 8), tile=tile,
        )
        self.calls = 0
        self.tiles = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.tiles += x.shape[0]
        return torch.full((x.shape[0], self.info.out_channels, *x.shape[2:]), self.value, dtype=x.dtype)


class Identity(nn.Module):
    """Returns its (normalised) input: shows what the network was fed."""

    def __init__(self, tile=(8, 32, 32)) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(target="boundaries", channel_names=("x",), activation="none",
                              input_multiple=(1, 8, 8), tile=tile)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class ConvNet(nn.Module):
    """Translation-equivariant two-layer conv net (receptive-field radius 2), sigmoid outputs."""

    def __init__(self, spatial_dims: int = 3, channels: int = 3, tile=(16, 32, 32), seed: int = 0,
                 target: str = "affinities") -> None:
        super().__init__()
        torch.manual_seed(seed)
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.net = nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), conv(4, channels, 3, padding=1))
        names = ("aff_z", "aff_y", "aff_x") if target == "affinities" else tuple(f"c{i}" for i in range(channels))
        self.info = ModelInfo(target=target, channel_names=names, spatial_dims=spatial_dims,
                              input_multiple=(1, 8, 8), tile=tile)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


class TrueAffinities(nn.Module):
    """Nearest-neighbour affinities computed from the input: ``exp(-|x(p) - x(p + o)|)``, 0 where
    ``p + o`` is outside the tile. Flipping the input and un-flipping the output gives the same
    map only if the affinity shift is undone, which makes it a probe for TTA. As a 2D model
    (``spatial_dims=2``) it computes the in-plane channels and leaves ``aff_z`` at 0: in
    ortho-plane mode the xz and yz planes must supply the volume's ``aff_z``."""

    def __init__(self, spatial_dims: int = 3, tile=(8, 16, 16)) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(target="affinities", activation="none", input_multiple=(1, 1, 1), tile=tile,
                              spatial_dims=spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        first = 3 - (x.dim() - 2)  # first volume axis the tensor has (0 for 3D, 1 for 2D planes)
        for o in self.info.offsets:
            a = torch.zeros_like(x)
            axis = [i for i, v in enumerate(o) if v][0]
            if axis >= first:
                dim = 2 + axis - first
                n = x.shape[dim]  # neighbour p - 1 along dim
                a.narrow(dim, 1, n - 1).copy_(torch.exp(-(x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)).abs()))
            out.append(a)
        return torch.cat(out, dim=1)


class FakeOOM(nn.Module):
    """Wraps a model; raises ``torch.cuda.OutOfMemoryError`` when a forward pass holds more than
    ``max_voxels`` input voxels (the batch times the tile), as a GPU would."""

    def __init__(self, inner: nn.Module, max_voxels: int) -> None:
        super().__init__()
        self.inner, self.max_voxels, self.info = inner, max_voxels, inner.info
        self.fails = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > self.max_voxels:
            self.fails += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.inner(x)


def em_volume(shape, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 volume with structure at several scales."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.random(shape), 1.5) + 0.3 * rng.random(shape)
    v = (v - v.min()) / (v.max() - v.min())
    return (v * 255).astype(np.uint8)


def single_pass(model: nn.Module, volume: np.ndarray, pad: tuple = (0, 0, 0)) -> np.ndarray:
    """The model on the whole (normalised, optionally reflect-padded) volume at once: ``(C, Z, Y, X)``."""
    from napari_emseg.models.info import apply_activation

    lo, hi = intensity_range(volume, model.info.norm)
    x = normalize(volume, lo, hi)
    pads = [(p // 2, p - p // 2) for p in pad]
    x = np.pad(x, pads, mode="reflect")
    with torch.no_grad():
        y = apply_activation(model(torch.from_numpy(x)[None, None]), model.info)[0].numpy()
    crop = tuple(slice(a, y.shape[i + 1] - b) for i, (a, b) in enumerate(pads))
    return y[(slice(None), *crop)]

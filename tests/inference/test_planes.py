"""2D models: slice-wise and ortho-plane inference; test-time augmentation by flips."""

from __future__ import annotations

import numpy as np
import torch

from napari_emseg.data.normalize import intensity_range, normalize
from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.inference.planes import channel_map, from_planes, to_planes
from napari_emseg.inference.tta import flip_sets, unflip
from napari_emseg.models.info import ModelInfo
from napari_emseg.progress import drain

from .toys import ConvNet, TrueAffinities, em_volume, single_pass

CPU = InferenceConfig(device="cpu", prefetch=1)


def run(model, volume, **changes):
    return drain(predict_tiled(model, volume, None, CPU.replace(**changes)), show=False)


def _net2d(model, image):
    """A 2D model on a whole normalised plane ``(h, w)`` -> ``(C, h, w)``."""
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(image))[None, None]))[0].numpy()


def test_planes_round_trip_every_axis():
    x = torch.arange(2 * 5 * 6 * 7, dtype=torch.float32).reshape(2, 1, 5, 6, 7)
    for axis, (h, w) in zip(range(3), ((6, 7), (5, 7), (5, 6))):
        p = to_planes(x, axis)
        assert p.shape == (2 * x.shape[2 + axis], 1, h, w)
        assert torch.equal(from_planes(p, 2, axis), x)


def test_slice_wise_2d_model_equals_per_slice_prediction():
    vol = em_volume((6, 50, 60), seed=8)  # anisotropic: no context across z
    net = ConvNet(spatial_dims=2, channels=2, target="boundaries", tile=(1, 32, 32))
    pred = run(net, vol, overlap=0.5, batch=8)
    lo, hi = intensity_range(vol)
    x = normalize(vol, lo, hi)
    ref = np.stack([_net2d(net, x[z]) for z in range(vol.shape[0])], axis=1)
    assert pred.shape == ref.shape == (2, 6, 50, 60)
    assert np.abs(pred.astype(np.float32) - ref).max() < 2e-3


def test_ortho_plane_averages_xy_xz_yz_predictions():
    vol = em_volume((24, 40, 40), seed=9)
    net = ConvNet(spatial_dims=2, channels=3, target="bcd", tile=(1, 24, 24))
    pred = run(net, vol, mode="ortho", overlap=0.5, block=(24, 24, 24))
    lo, hi = intensity_range(vol)
    x = normalize(vol, lo, hi)
    xy = np.stack([_net2d(net, x[i]) for i in range(x.shape[0])], axis=1)
    xz = np.stack([_net2d(net, x[:, i]) for i in range(x.shape[1])], axis=2)
    yz = np.stack([_net2d(net, x[:, :, i]) for i in range(x.shape[2])], axis=3)
    ref = (xy + xz + yz) / 3
    assert np.abs(pred.astype(np.float32) - ref).max() < 2.5e-3
    assert np.abs(pred.astype(np.float32) - xy).max() > 0.02  # the other planes really count


def test_ortho_plane_rotates_affinity_channels_into_the_volume_frame():
    info = ModelInfo(spatial_dims=2)  # aff_z, aff_y, aff_x
    assert channel_map(info, 0, "ortho") == ([1, 2], [1, 2])  # xy: y -> y, x -> x
    assert channel_map(info, 1, "ortho") == ([1, 2], [0, 2])  # xz: the plane's y is the volume's z
    assert channel_map(info, 2, "ortho") == ([1, 2], [0, 1])  # yz: plane y -> z, plane x -> y
    assert channel_map(info, 1, "slices") == ([0, 1, 2], [0, 1, 2])

    vol = em_volume((16, 24, 24), seed=10)
    pred = run(TrueAffinities(spatial_dims=2, tile=(1, 16, 16)), vol, mode="ortho", overlap=0.5)
    ref = single_pass(TrueAffinities(spatial_dims=3), vol)  # true 3D affinities, aff_z included
    assert ref[0].max() > 0.5
    np.testing.assert_allclose(pred.astype(np.float32), ref, atol=2e-3)


def test_tta_averages_flipped_predictions():
    vol = em_volume((8, 32, 32), seed=11)  # one tile: no blending, so the average is exact
    net = ConvNet(tile=(8, 32, 32), target="boundaries", channels=2)
    pred = run(net, vol, tta=True)
    flips = []
    for axes in flip_sets((0, 1, 2)):
        y = single_pass(net, np.flip(vol, axes).copy()) if axes else single_pass(net, vol)
        flips.append(np.flip(y, [1 + a for a in axes]) if axes else y)
    assert len(flips) == 8
    np.testing.assert_allclose(pred.astype(np.float32), np.mean(flips, axis=0), atol=1e-3)
    assert np.abs(pred.astype(np.float32) - flips[0]).max() > 0.01  # TTA changed something


def test_tta_shifts_flipped_affinities_back_onto_their_voxels():
    vol = em_volume((8, 16, 16), seed=12)
    model = TrueAffinities(tile=(8, 16, 16))
    plain = run(model, vol).astype(np.float32)
    tta = run(model, vol, tta=True).astype(np.float32)
    for c, axis in enumerate((0, 1, 2)):  # aff_z, aff_y, aff_x: offset -1 along one axis
        inner = [slice(None)] * 3
        inner[axis] = slice(1, None)  # index 0: the affinity to outside the volume
        np.testing.assert_allclose(tta[c][tuple(inner)], plain[c][tuple(inner)], atol=1e-3)
    # without the shift, the flipped-back affinities would sit one voxel off
    flipped = torch.from_numpy(single_pass(model, np.flip(vol, 1).copy())[None])
    assert (torch.flip(flipped, dims=[3]) - torch.from_numpy(plain[None])).abs()[:, 1, :, 1:-1].max() > 0.1
    assert (unflip(flipped, (1,), model.info) - torch.from_numpy(plain[None])).abs()[:, 1, :, 1:].max() < 1e-3


def test_auto_mode_runs_a_2d_model_on_ortho_planes_for_near_isotropic_voxels():
    """RETINA's recipe: ``auto`` averages xy, xz and yz planes when the voxels are near-isotropic."""
    from napari_emseg.inference import resolve_mode

    vol = em_volume((32, 40, 40), seed=9)
    net = ConvNet(spatial_dims=2, channels=3, target="bcd", tile=(1, 24, 24))
    auto = drain(predict_tiled(net, vol, None, CPU.replace(overlap=0.5, block=(32, 24, 24)),
                               voxel_size=(8.0, 8.0, 8.0)), show=False)
    ortho = run(net, vol, mode="ortho", overlap=0.5, block=(32, 24, 24))
    assert np.array_equal(auto, ortho)
    info = net.info
    auto_cfg = InferenceConfig()
    assert resolve_mode(info, auto_cfg, voxel_size=(10.0, 8.0, 8.0), shape=(64, 64, 64)) == "ortho"
    # serial sections, an unknown voxel size, or a thin stack: plain slices
    assert resolve_mode(info, auto_cfg, voxel_size=(40.0, 8.0, 8.0), shape=(64, 64, 64)) == "slices"
    assert resolve_mode(info, auto_cfg, voxel_size=None, shape=(64, 64, 64)) == "slices"
    assert resolve_mode(info, auto_cfg, voxel_size=(8.0, 8.0, 8.0), shape=(8, 64, 64)) == "slices"
    assert resolve_mode(info, auto_cfg.replace(mode="slices"), voxel_size=(8.0, 8.0, 8.0)) == "slices"
    unknown = run(net, vol, overlap=0.5, block=(32, 24, 24))  # no voxel size given: xy planes only
    assert np.abs(unknown.astype(np.float32) - ortho.astype(np.float32)).max() > 0.02

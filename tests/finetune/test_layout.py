"""Every layout a user paints: separate images, serial sections, volumes; 1-3+ slices, any axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg.finetune.annotations import dense_axis, find_annotations
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.layout import detect_layout
from napari_emseg.models import load_checkpoint
from napari_emseg.models.checkpoint import adapt_kernel
from napari_emseg.progress import drain

TINY = dict(steps=3, patch=(1, 32, 32), batch_size=2, calibrate=False)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def micrographs(n=3, side=64, seed=0):
    """``n`` unrelated images with blob 'mitochondria' (each fully painted), as a (n, y, x) stack."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    raw = np.empty((n, side, side), np.uint8)
    lab = np.zeros((n, side, side), np.uint32)
    for z in range(n):
        blobs = ndi.gaussian_filter(rng.random((side, side)), 3) > 0.55
        # a mitochondrion in every column and row but one: sparse classes leave some rows empty
        lab[z], _ = ndi.label(blobs)
        lab[z, :, -1] = 0
        raw[z] = np.clip(150 - 90 * blobs + rng.normal(0, 12, (side, side)), 0, 255)
    return raw, lab


@pytest.mark.parametrize(("painted", "expected"), [
    (3, (0, 1, 2)), (2, (0, 1)), (1, (0,)),
])
def test_a_stack_of_fully_painted_micrographs_is_painted_along_z(painted, expected):
    raw, lab = micrographs()
    lab[painted:] = 0
    ann = find_annotations(lab, raw.shape)
    assert ann.axis == 0 and ann.slices == expected
    assert ann.mask[list(range(painted))].all()  # every painted image teaches, background included


def test_dense_axis_rules():
    shape = (100, 200, 300)
    assert dense_axis((3, 200, 300), shape) == 0      # 3 z-slices of a volume
    assert dense_axis((100, 200, 2), shape) == 2      # 2 x-slices
    assert dense_axis((100, 199, 290), shape) == 0    # every z-slice (and almost every row): z
    assert dense_axis((2, 2, 300), (3, 2, 300)) == 0  # 2 of 3 images


def test_slices_painted_along_x_and_scribbled_regions(tiny_em):
    lab = np.zeros_like(tiny_em.mitochondria)
    lab[:, :, 40] = tiny_em.mitochondria[:, :, 40] + 0
    lab[0, 0, 40] = 1  # at least one voxel
    assert find_annotations(lab, lab.shape).axis == 2
    # a painted region inside a slice: scribbles mark it, background included
    region = np.zeros_like(tiny_em.mitochondria)
    region[5, 10:40, 10:40] = np.where(tiny_em.mitochondria[5, 10:40, 10:40] > 0, 2, 1)
    region[5, 12, 12] = 3
    ann = find_annotations(region, region.shape, mode="scribbles")
    assert ann.n_annotated == 30 * 30


def test_layout_chooses_2d_for_sections_and_3d_for_isotropic_volumes(tiny_em):
    raw, _ = micrographs(6)
    assert detect_layout(raw).dims == 2                              # separate images
    assert detect_layout(tiny_em.raw, (50, 5, 5)).dims == 2          # 10x coarser z
    iso = detect_layout(np.repeat(tiny_em.raw[:1], 12, 0) + 0, (8, 8, 8))
    assert iso.dims == 3 and "isotropic" in iso.reason
    assert detect_layout(raw, dims="3d").dims == 3                  # overridable
    # mitochondria in a volume: a 2D network (kind "volume": ortho-plane inference, 3D objects)
    mito = detect_layout(np.repeat(tiny_em.raw[:1], 12, 0) + 0, (8, 8, 8), task="mitochondria")
    assert (mito.dims, mito.kind) == (2, "volume") and "xz" in mito.reason
    assert detect_layout(tiny_em.raw, (8, 8, 8), "3d", task="mitochondria").dims == 3
    assert detect_layout(np.repeat(tiny_em.raw[:1], 12, 0) + 0, (8, 8, 8), task="neurons").dims == 3
    # semantic classes too: painted on slices, a 2D network predicted on three planes
    sem = detect_layout(np.repeat(tiny_em.raw[:1], 12, 0) + 0, (8, 8, 8), task="semantic")
    assert (sem.dims, sem.kind) == (2, "volume") and "classes" in sem.reason


def test_three_painted_micrographs_fine_tune_all_three_with_a_2d_network(tmp_path):
    """The crash of issue 13: three fully painted micrographs (and the axis taken for x)."""
    raw, lab = micrographs(3)
    res = drain(fine_tune("auto", raw, lab, FineTuneConfig(task="mitochondria", **TINY),
                          out=tmp_path / "m.safetensors"), show=False)
    card = load_checkpoint(res.checkpoint).card
    assert card["annotated"]["axis"] == 0 and card["annotated"]["slices"] == [0, 1, 2]
    assert card["annotated"]["held_out"] == []  # three slices: all three teach
    assert card["layout"]["dims"] == 2 and card["layout"]["arch"] == "unet2d"
    assert res.model.info.spatial_dims == 2


def test_a_3d_encoder_deflates_into_the_2d_network_and_back():
    w3 = torch.randn(8, 4, 3, 3, 3)
    w2 = adapt_kernel(w3, (8, 4, 3, 3))
    torch.testing.assert_close(w2, w3.sum(2))
    x = torch.randn(1, 4, 3, 10, 10)
    flat = x[:, :, :1].repeat(1, 1, 3, 1, 1)  # constant along z: the 2D and 3D convolutions agree
    y3 = torch.nn.functional.conv3d(flat, w3, padding=1)[:, :, 1]
    y2 = torch.nn.functional.conv2d(flat[:, :, 1], w2, padding=1)
    torch.testing.assert_close(y3, y2, rtol=1e-4, atol=1e-4)
    back = adapt_kernel(w2, (8, 4, 3, 3, 3))
    torch.testing.assert_close(back.sum(2), w2)
    assert adapt_kernel(w3, (8, 4, 5, 5)) is w3  # not the same layout: left for the shape check


def test_mscon_encoder_fine_tunes_a_2d_network_on_sections(tmp_path):
    raw, lab = micrographs(3)
    res = drain(fine_tune("mscon-resunet-small-drosophila-vnc", raw, lab,
                          FineTuneConfig(task="mitochondria", **TINY), out=tmp_path / "m.safetensors"), show=False)
    card = load_checkpoint(res.checkpoint).card
    assert card["layout"]["arch"] == "resunet2d" and card["transplant"]["loaded"] > 0


@pytest.mark.parametrize("arch", ["unet2d", "resunet2d"])
def test_2d_networks_run_a_volume_slice_by_slice(arch):
    from napari_emseg.models import ModelConfig, build_model
    from napari_emseg.models.heads import head_info

    net = build_model(ModelConfig(arch=arch, widths=(4, 8, 8, 8, 8)), head_info("bcd")).eval()
    vol = torch.randn(2, 1, 3, 32, 32)
    with torch.no_grad():
        out = net(vol)
        assert out.shape == (2, 3, 3, 32, 32)
        torch.testing.assert_close(out[1, :, 2], net(vol[1:2, :, 2])[0])


def test_isotropic_neurons_from_three_painted_slices_train_a_3d_network_and_segment(tmp_path):
    """Near-isotropic FIB-SEM-like data: 3 painted z-slices -> a 3D network, all three teach, then segment."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.workflows import SegmentConfig, segment_job

    em = make_synthetic_em((24, 48, 48), seed=1, voxel_size=(8.0, 8.0, 8.0), neurite_diameter_nm=160.0)
    lab = np.zeros_like(em.neurons)
    for z in (4, 12, 20):
        lab[z] = em.neurons[z]
    cfg = FineTuneConfig(task="neurons", steps=2, patch=(16, 32, 32), batch_size=1, calibrate=False)
    res = drain(fine_tune("auto", em.raw, lab, cfg, out=tmp_path / "n.safetensors", voxel_size=em.voxel_size),
                show=False)
    card = load_checkpoint(res.checkpoint, tensors=False).card
    assert card["layout"]["dims"] == 3 and res.model.info.spatial_dims == 3
    assert card["annotated"]["slices"] == [4, 12, 20] and card["annotated"]["held_out"] == []
    seg = drain(segment_job(str(res.checkpoint), em.raw, SegmentConfig(), voxel_size=em.voxel_size,
                            provenance=False), show=False)
    assert seg.labels.shape == em.raw.shape and seg.labels.max() > 0


def test_isotropic_mitochondria_from_painted_slices_train_a_2d_network_predicted_on_three_planes(tmp_path):
    """Near-isotropic data, mitochondria: a 2D network (docs/benchmarks.md: a 3D one learns far less
    from painted slices in the same time), ortho-plane inference, 3D objects."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.inference import InferenceConfig
    from napari_emseg.inference.predict import resolve_mode
    from napari_emseg.workflows import SegmentConfig, segment_job

    em = make_synthetic_em((40, 48, 48), seed=1, voxel_size=(8.0, 8.0, 8.0), neurite_diameter_nm=240.0)
    lab = np.zeros_like(em.mitochondria)
    zs = [z for z in range(4, 36) if em.mitochondria[z].any()][::8][:3]
    for z in zs:
        lab[z] = em.mitochondria[z]
    cfg = FineTuneConfig(task="mitochondria", steps=2, batch_size=1, patch=(1, 48, 48))
    res = drain(fine_tune("auto", em.raw, lab, cfg, out=tmp_path / "m.safetensors", voxel_size=em.voxel_size),
                show=False)
    card = load_checkpoint(res.checkpoint, tensors=False).card
    assert (card["layout"]["dims"], card["layout"]["kind"]) == (2, "volume") and res.model.info.spatial_dims == 2
    assert card["annotated"]["slices"] == zs and card["annotated"]["held_out"] == []
    assert card["layout"]["cross_planes"]  # it also learnt xz and yz planes, which ortho inference meets
    assert card["postprocess"]["config"]["mode"] == "3d"  # objects run through the volume
    assert resolve_mode(res.model.info, InferenceConfig(), voxel_size=em.voxel_size, shape=em.raw.shape) == "ortho"
    seg = drain(segment_job(str(res.checkpoint), em.raw, SegmentConfig(), voxel_size=em.voxel_size,
                            provenance=False), show=False)
    assert seg.labels.shape == em.raw.shape

"""The synthetic EM generator: deterministic, and plausible to someone who knows EM."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_emseg.data.synthetic import make_synthetic_em


def test_deterministic():
    a = make_synthetic_em(shape=(6, 64, 64), seed=3)
    b = make_synthetic_em(shape=(6, 64, 64), seed=3)
    c = make_synthetic_em(shape=(6, 64, 64), seed=4)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.neurons, b.neurons)
    np.testing.assert_array_equal(a.mitochondria, b.mitochondria)
    assert not np.array_equal(a.raw, c.raw)


def test_types_and_shapes(tiny_em):
    assert tiny_em.raw.dtype == np.uint8 and tiny_em.raw.shape == (12, 96, 96)
    assert tiny_em.neurons.dtype == np.uint32 and tiny_em.mitochondria.dtype == np.uint32
    assert tiny_em.voxel_size[0] > tiny_em.voxel_size[1]  # anisotropic z
    assert tiny_em.neurons.min() >= 1  # dense neuron labels
    assert 5 <= len(np.unique(tiny_em.neurons)) <= 200


def test_membranes_darker_than_cytoplasm_and_mitochondria_dark(tiny_em):
    raw = tiny_em.raw.astype(float)
    mem = tiny_em.membranes
    mito = tiny_em.mitochondria > 0
    cyto = ~mem & ~mito
    assert raw[mem].mean() < raw[cyto].mean() - 40
    assert mito.any()
    assert raw[mito].mean() < raw[cyto].mean() - 30


def test_mitochondria_lie_inside_single_neurons(tiny_em):
    for mid in np.unique(tiny_em.mitochondria)[1:]:
        hosts = np.unique(tiny_em.neurons[tiny_em.mitochondria == mid])
        assert len(hosts) == 1, f"mitochondrion {mid} spans neurons {hosts}"
        assert not (tiny_em.membranes & (tiny_em.mitochondria == mid)).any()


def test_each_neuron_is_one_connected_object(tiny_em):
    for nid in np.unique(tiny_em.neurons)[:30]:
        _, n = ndi.label(tiny_em.neurons == nid)
        assert n == 1


def test_neurons_continue_through_z():
    em = make_synthetic_em(shape=(16, 96, 96), seed=1)
    spans = [np.ptp(np.nonzero(em.neurons == i)[0]) for i in np.unique(em.neurons)]
    assert np.median(spans) >= 4  # neurites are 3D objects, not per-slice cells


def test_isotropic_voxels_render_a_volume_whose_xz_planes_look_like_its_xy_planes():
    """At near-isotropic voxel sizes (FIB-SEM) membranes run in 3D: where neurites meet along z,
    membrane is drawn that no in-plane boundary makes (sections: none)."""
    from napari_emseg.data.synthetic import _membranes

    def beyond_in_plane(em):
        in_plane, _ = _membranes(em.neurons, 20.0 / 8.0)  # what sections draw
        return (em.membranes & ~in_plane).mean()

    assert beyond_in_plane(make_synthetic_em((32, 64, 64), seed=2, voxel_size=(8.0, 8.0, 8.0))) > 0.005
    assert beyond_in_plane(make_synthetic_em((32, 64, 64), seed=2, voxel_size=(40.0, 8.0, 8.0))) == 0.0


def test_mito_fraction_above_one_places_several_mitochondria_per_neurite():
    """A volume long in z keeps its density of mitochondria: fraction 3 places about three per neurite."""
    kw = dict(shape=(60, 64, 64), seed=5, voxel_size=(8.0, 8.0, 8.0))
    one, three = make_synthetic_em(**kw, mito_fraction=1.0), make_synthetic_em(**kw, mito_fraction=3.0)
    np.testing.assert_array_equal(one.neurons, three.neurons)  # only the mitochondria change
    n_one, n_three = len(np.unique(one.mitochondria)) - 1, len(np.unique(three.mitochondria)) - 1
    assert n_three > 1.5 * n_one > 0
    hosts = [np.unique(three.neurons[three.mitochondria == i]) for i in np.unique(three.mitochondria)[1:]]
    assert all(len(h) == 1 for h in hosts)  # each still inside one neurite
    assert len({int(h[0]) for h in hosts}) < n_three  # some neurite carries more than one

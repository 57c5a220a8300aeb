"""Morphometrics with known answers: an anisotropic ellipsoid, a straight tube, a Y; table, CSV, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_emseg.cli.main import main
from napari_emseg.io import write_volume
from napari_emseg.morphometrics import (
    COLUMNS,
    MeasureConfig,
    MeasureError,
    measure,
    napari_features,
    surface_area,
    table_rows,
    write_csv,
)

VS = (20.0, 8.0, 8.0)  # anisotropic, as EM is


def grid(shape, vs=VS):
    """Physical coordinates (nm) of voxel centres, one array per axis."""
    return np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, vs)], indexing="ij")


def ellipsoid(shape, centre, axes, vs=VS):
    z, y, x = grid(shape, vs)
    return sum(((c - m) / a) ** 2 for c, m, a in zip((z, y, x), centre, axes)) <= 1


def capsule(shape, a, b, radius, vs=VS):
    """Voxels within ``radius`` nm of the segment from ``a`` to ``b`` (nm)."""
    p = np.stack(grid(shape, vs), -1)
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1) <= radius


def ellipsoid_area(a, b, c):
    """Knud Thomsen's formula (relative error below 1.1 %)."""
    p = 1.6075
    return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def test_ellipsoid_volume_surface_centroid_and_box():
    axes = (400.0, 300.0, 250.0)
    labels = ellipsoid((46, 81, 68), (450, 320, 268), axes).astype(np.uint16) * 5
    t = measure(labels, VS, config=MeasureConfig(skeleton=False))
    assert list(t["label"]) == [5] and list(t) == [c for c in COLUMNS if c not in
                                                     ("skeleton_length_nm", "length_nm", "branch_points",
                                                      "end_points", "mean_intensity")]
    volume = 4 / 3 * np.pi * np.prod(axes) / 1e9
    area = ellipsoid_area(*axes) / 1e6
    assert t["volume_um3"][0] == pytest.approx(volume, rel=0.02)
    assert t["surface_um2"][0] == pytest.approx(area, rel=0.04)
    assert (t["centroid_z_nm"][0], t["centroid_y_nm"][0], t["centroid_x_nm"][0]) == pytest.approx((450, 320, 268), abs=4)
    assert t["centroid_z"][0] == pytest.approx(450 / 20, abs=0.2)
    nz = np.nonzero(labels)
    assert [t[f"bbox_{a}0"][0] for a in "zyx"] == [int(i.min()) for i in nz]
    assert [t[f"bbox_{a}1"][0] for a in "zyx"] == [int(i.max()) + 1 for i in nz]
    assert t["extent_z_nm"][0] == pytest.approx(800, abs=2 * VS[0])
    # the raw voxel staircase overestimates the area; the default smoothed estimate does not
    assert surface_area(labels > 0, VS, sigma=0) / 1e6 > 1.08 * area


def test_straight_tube_length_and_y_shape_branching():
    tube = capsule((20, 30, 130), (190, 116, 150), (190, 116, 850), 48)  # 800 nm tip to tip
    y_shape = np.zeros((20, 110, 130), bool)
    centre = np.array([190.0, 436.0, 516.0])
    ends = [centre + 350 * np.array([0, np.sin(a), np.cos(a)]) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)]
    for end in ends:
        y_shape |= capsule(y_shape.shape, centre, end, 40)
    labels = np.zeros((20, 140, 130), np.uint32)
    labels[:, :30][tube] = 1
    labels[:, 30:][y_shape] = 7
    t = measure(labels, VS)
    assert list(t["label"]) == [1, 7]
    assert t["length_nm"][0] == pytest.approx(800, rel=0.1)
    assert t["skeleton_length_nm"][0] < t["length_nm"][0]
    assert (t["branch_points"][0], t["end_points"][0]) == (0, 2)
    assert (t["branch_points"][1], t["end_points"][1]) == (1, 3)
    assert t["length_nm"][1] == pytest.approx(3 * (350 + 40), rel=0.1)  # three arms, tip to centre each


def test_table_intensity_features_csv_and_cli(tmp_path, capsys):
    labels = np.zeros((4, 20, 20), np.uint32)
    labels[1:3, 2:6, 2:6] = 3
    labels[0:4, 10:18, 12:15] = 9
    image = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    t = measure(labels, (40, 8, 8), image)
    assert list(t["label"]) == [3, 9] and list(t["volume_voxels"]) == [32, 96]
    assert t["mean_intensity"][0] == pytest.approx(image[labels == 3].mean())
    assert t["volume_um3"][1] == pytest.approx(96 * 40 * 8 * 8 / 1e9)
    rows = table_rows(t)
    assert rows[1]["label"] == 9 and isinstance(rows[1]["volume_um3"], float)
    feats = napari_features(t)
    assert list(feats["index"]) == [3, 9] and "label" not in feats
    path = write_csv(t, tmp_path / "t.csv")
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert [int(r["label"]) for r in read] == [3, 9] and float(read[1]["volume_um3"]) == pytest.approx(t["volume_um3"][1], rel=1e-5)

    write_volume(tmp_path / "l.zarr", labels, voxel_size=(40, 8, 8))
    np.save(tmp_path / "img.npy", image)
    assert main(["-q", "measure", str(tmp_path / "l.zarr"), "--image", str(tmp_path / "img.npy"),
                 "--csv", str(tmp_path / "cli.csv")]) == 0
    assert "2 objects" in capsys.readouterr().out
    assert (tmp_path / "cli.csv").read_text() == path.read_text()
    np.save(tmp_path / "l.npy", labels)  # a file that records no voxel size
    assert main(["-q", "measure", str(tmp_path / "l.npy")]) == 2
    assert "--voxel-size" in capsys.readouterr().err
    assert main(["-q", "measure", str(tmp_path / "l.npy"), "--voxel-size", "40,8,8", "--no-skeleton"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("label,volume_voxels,volume_um3,surface_um2")
    with pytest.raises(MeasureError, match="voxel size"):
        measure(labels, None)

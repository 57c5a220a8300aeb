"""The core imports without Qt: no qtpy, magicgui, superqt or napari.qt outside _qt/."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_emseg

QT_MODULES = ("qtpy", "magicgui", "superqt", "napari.qt", "PyQt5", "PyQt6", "PySide2", "PySide6")


def core_modules():
    names = []
    for info in pkgutil.walk_packages(napari_emseg.__path__, "napari_emseg."):
        if "._qt" in info.name:
            continue
        names.append(info.name)
    return names


def test_core_loads_no_qt_in_a_fresh_process():
    mods = core_modules()
    assert "napari_emseg.io" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = [q for q in {QT_MODULES!r} if q in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported Qt modules: {out.stdout.strip()}"


def test_package_import_is_light():
    code = "import sys, napari_emseg; print(','.join(m for m in ('torch', 'napari', 'dask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""

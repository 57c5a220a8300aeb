"""The npe2 manifest is valid and every python_name it names imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

MANIFEST = Path(__file__).parents[1] / "src" / "napari_emseg" / "napari.yaml"


def python_names():
    data = yaml.safe_load(MANIFEST.read_text())
    return [c["python_name"] for c in data["contributions"]["commands"]]


@pytest.mark.parametrize("python_name", python_names())
def test_python_name_resolves(python_name):
    module, attr = python_name.split(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_command_ids_are_namespaced_and_referenced():
    data = yaml.safe_load(MANIFEST.read_text())
    contrib = data["contributions"]
    ids = {c["id"] for c in contrib["commands"]}
    assert all(i.startswith("napari-emseg.") for i in ids)
    used = [r["command"] for r in contrib.get("readers", [])]
    used += [w["command"] for w in contrib.get("writers", [])]
    used += [s["command"] for s in contrib.get("sample_data", [])]
    used += [w["command"] for w in contrib.get("widgets", [])]
    assert set(used) <= ids


def test_npe2_validate():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-emseg")
    assert pm.name == "napari-emseg"
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-emseg"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

"""Compute-device selection and mixed-precision choice, shared by training and inference."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def select_device(name: str | None = None) -> Any:
    """The device to compute on: ``name`` if given (``"cuda"``, ``"cuda:1"``, ``"mps"``,
    ``"cpu"``), else CUDA if usable, then Apple MPS, then the CPU."""
    import torch

    if name and name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            from .errors import EmsegError

            raise EmsegError(f"device {name!r} asked for, but CUDA is not usable here; use 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: Any, precision: str = "auto") -> Any:
    """The autocast dtype for ``precision`` (``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp32"``).

    ``"auto"`` is bf16 on CUDA devices that support it, fp16 on older CUDA devices, and no
    autocast (``None``) on CPU and MPS.
    """
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if getattr(device, "type", str(device)) != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def device_summary() -> dict[str, Any]:
    """What the machine offers: CUDA usability, GPU names and memory, torch version."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    mps = getattr(torch.backends, "mps", None)
    info["mps_available"] = bool(mps is not None and mps.is_available())
    info["device"] = str(select_device())
    return info


def device_choices() -> list[tuple[str, str]]:
    """The devices a user may choose, as ``(value, label)`` pairs for a menu.

    ``"auto"`` (what :func:`select_device` picks, named in its label), ``"cpu"``, ``"cuda:N"``
    for each GPU torch sees (``CUDA_VISIBLE_DEVICES`` applies), and ``"mps"`` where Apple's GPU is
    usable. Every value is accepted by :func:`select_device` and by the ``device`` field of the
    fine-tune and inference configs.
    """
    info = device_summary()
    choices = [("auto", f"auto ({info['device']})"), ("cpu", "cpu")]
    choices += [(f"cuda:{g['index']}", f"cuda:{g['index']}: {g['name']} ({g['memory_gb']} GB)") for g in info["gpus"]]
    if info["mps_available"]:
        choices.append(("mps", "mps: Apple GPU"))
    return choices

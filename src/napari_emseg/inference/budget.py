"""Output blocks sized from free memory: larger on a roomy GPU, smaller where RAM is short.

A block's buffers take a fixed number of bytes per voxel of its read region, on the compute
device (the raw and the normalised block, the float32 weighted sum, the quotient in the output
type, the weight sum) and in host memory (blocks read ahead, blocks waiting to be written, and
on a CPU the device's buffers too). :func:`auto_block` scales the configured block so that they
fit a fraction of what is free: on CUDA up to :data:`DEVICE_FRACTION` of the free GPU memory
(``torch.cuda.mem_get_info``, plus what PyTorch's cache holds unused) and never below the
configured block; on the CPU (and MPS) never above it, shrunk only when
:data:`HOST_FRACTION` of the available RAM (``psutil``) cannot hold it. The rest is left to
the network's activations, which the batch and tile govern.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["free_memory", "block_bytes_per_voxel", "auto_block", "scale_block"]

logger = logging.getLogger(__name__)

#: share of the free GPU memory the block buffers may take (the network needs the rest)
DEVICE_FRACTION = 0.25
#: share of the available RAM the block buffers may take
HOST_FRACTION = 0.10
#: a block grows to at most this many times the configured one's voxels
MAX_GROWTH = 64.0


def free_memory(device: torch.device) -> tuple[int | None, int]:
    """``(free bytes on the device or None for the CPU, available host RAM bytes)``."""
    import psutil

    host = int(psutil.virtual_memory().available)
    if device.type != "cuda":
        return None, host
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(0, cached)), host


def block_bytes_per_voxel(c_out: int, in_bytes: int, out_bytes: int, prefetch: int,
                          writes: int = 2) -> tuple[int, int]:
    """``(device, host)`` bytes per voxel of a block's region."""
    device = in_bytes + 4 + 4 * c_out + out_bytes * c_out + 4  # raw, normalised, sum, quotient, weights
    host = (prefetch + 1) * in_bytes + (writes + 1) * out_bytes * c_out
    return device, host


def scale_block(target: Sequence[int], shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """``target`` with ``factor`` times its voxels, each axis scaled alike; growth an axis cannot
    take (the volume is shorter) goes to the others."""
    block = [float(t) for t in target]
    if factor < 1.0:
        return tuple(max(1, int(b * factor ** (1 / 3))) for b in block)
    free, left = [i for i in range(len(block)) if block[i] < shape[i]], factor
    while free and left > 1.0 + 1e-6:
        step, capped = left ** (1 / len(free)), []
        for i in free:
            new = min(block[i] * step, float(shape[i]))
            left /= new / block[i]
            block[i] = new
            if new >= shape[i]:
                capped.append(i)
        if not capped:
            break
        free = [i for i in free if i not in capped]
    return tuple(int(b) for b in block)


def auto_block(target: Sequence[int], shape: Sequence[int], device: torch.device, *, c_out: int,
               in_bytes: int, out_bytes: int, prefetch: int) -> tuple[int, ...]:
    """The block to aim for (:func:`~.tiling.choose_block` then rounds it to tile strides)."""
    target = tuple(int(t) for t in target)
    dev_bpv, host_bpv = block_bytes_per_voxel(c_out, in_bytes, out_bytes, prefetch)
    dev_free, host_free = free_memory(device)
    if device.type == "cpu":
        dev_bpv, dev_free = dev_bpv + host_bpv, host_free
    voxels = HOST_FRACTION * host_free / host_bpv
    if dev_free is not None:
        voxels = min(voxels, (DEVICE_FRACTION if device.type == "cuda" else HOST_FRACTION) * dev_free / dev_bpv)
    factor = voxels / float(np.prod(target))
    factor = min(factor, MAX_GROWTH) if device.type == "cuda" else min(factor, 1.0)
    if device.type == "cuda":
        factor = max(factor, 1.0)  # the configured block is the floor (out of memory backs off)
    if abs(factor - 1.0) < 1e-3:
        return target
    block = scale_block(target, shape, factor)
    logger.info("blocks of about %s from free memory (device %s MB, host %s MB)", block,
                None if dev_free is None else dev_free >> 20, host_free >> 20)
    return block

"""Fine-tuning steps per second on this machine: what a CPU budget buys, network by network.

A fine-tune's accuracy after N minutes is decided by steps x batch x voxels, so this measures
one full training step (forward, masked BCD loss, backward, AdamW update) of each candidate
the recipe could use, side by side in the same process, in interleaved rounds:

* ``monai-basicunet2d``: MONAI ``BasicUNet`` 2D, features (16, 32, 64, 128, 256, 16): the plain
  baseline of ``bench/few_slices.py``.
* ``resunet2d``: napari-emseg's 2D residual U-Net (the recipe's network for sections), with
  and without channels-last memory format.
* ``resunet2d-sub1``: the same with one convolution per residual unit.
* ``resunet3d``: the 3D residual U-Net (the network for near-isotropic volumes) on 2 patches
  of 16 x 128 x 128, and ``resunet3d-z1``: the 3D network fed 2D patches (what fine-tuning
  did on sections before the 2D network existed).

It also times the data side (one batch of 8 augmented 192^2 patches with BCD targets), which
runs between steps. Voxels/s counts the voxels of each step's batch.

    python bench/finetune_speed.py                 # ~3 min on 2 cores
    python bench/finetune_speed.py --threads 1 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def candidates():
    from monai.networks.nets import BasicUNet

    from napari_emseg.models.build import ModelConfig, build_model
    from napari_emseg.models.heads import head_info

    bcd = head_info("bcd")
    return {
        "monai-basicunet2d": (lambda: BasicUNet(2, 1, 3, features=(16, 32, 64, 128, 256, 16)), (8, 1, 192, 192), False),
        "resunet2d": (lambda: build_model(ModelConfig(arch="resunet2d"), bcd), (8, 1, 192, 192), False),
        "resunet2d-channels-last": (lambda: build_model(ModelConfig(arch="resunet2d"), bcd), (8, 1, 192, 192), True),
        "resunet2d-sub1": (lambda: build_model(ModelConfig(arch="resunet2d", subunits=1), bcd), (8, 1, 192, 192), False),
        "resunet3d": (lambda: build_model(ModelConfig(arch="resunet", widths=(16, 32, 64, 128)), bcd),
                      (2, 1, 16, 128, 128), False),
        "resunet3d-z1": (lambda: build_model(ModelConfig(arch="resunet", widths=(16, 32, 64, 128), anisotropic_levels=3),
                                             bcd), (8, 1, 1, 192, 192), False),
    }


def time_steps(make, shape, channels_last: bool, steps: int) -> float:
    from napari_emseg.finetune.losses import task_loss

    torch.manual_seed(0)
    net = make()
    x = torch.randn(shape)
    target = (torch.rand((shape[0], 3, *shape[2:])) > 0.8).float()
    mask = torch.ones_like(target)
    if channels_last and x.ndim == 4:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    t = 0.0
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = task_loss("bcd", net(x).float(), target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up the allocator and oneDNN
            t += time.perf_counter() - t0
    return t / steps


def time_batches(n: int) -> float:
    from napari_emseg.finetune.annotations import find_annotations
    from napari_emseg.finetune.dataset import AnnotatedPatches
    from napari_emseg.finetune.job import FINETUNE_AUGMENT

    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(rng.random((3, 768, 768)), (0, 6, 6))
    lab, _ = ndi.label(smooth > smooth.mean() + smooth.std())  # blobs on ~15 % of the pixels
    img = rng.random((3, 768, 768)).astype(np.float32)
    ann = find_annotations(lab.astype(np.uint32), img.shape)
    data = AnnotatedPatches(img, ann, "bcd", (1, 192, 192), batch_size=8, augmentation=FINETUNE_AUGMENT, spatial_dims=2)
    t0 = time.perf_counter()
    for i in range(n):
        data.batch(i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=3, help="timed steps per round and candidate")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    cands = candidates()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(args.rounds):
        for name, (make, shape, cl) in cands.items():
            times[name].append(time_steps(make, shape, cl, args.steps))
    base = float(np.median(times["monai-basicunet2d"]))
    print(f"{'network':26s} {'batch':>18s} {'s/step':>8s} {'steps/min':>9s} {'Mvox/s':>7s} {'vs baseline':>11s}")
    for name, (_make, shape, _cl) in cands.items():
        s = float(np.median(times[name]))
        vox = int(np.prod(shape)) / s / 1e6
        print(f"{name:26s} {'x'.join(map(str, shape)):>18s} {s:8.3f} {60 / s:9.1f} {vox:7.2f} {base / s:10.2f}x")
    print(f"data: one batch of 8 augmented 192^2 patches with BCD targets: {time_batches(5):.3f} s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

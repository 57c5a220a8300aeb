"""Pretraining throughput: samples/s of the data pipeline and of training, per method.

For each method (MAE-3D, MS-Con, RETINA) it measures, in one process:

* ``data``: batches of the patch sampler + the method's augmentations (one process, no
  workers) from a synthetic EM volume stored as zarr, read lazily as in training;
* ``train``: full optimiser steps through the shared trainer (``pretrain.trainer.train``) on a
  fixed batch, after two warm-up steps (AMP bf16 on CUDA as the trainer chooses);
* the baseline run side by side: MAE-3D with the encoder on **all** tokens (as SimMIM-style
  masked modelling does) against the visible-only encoder of MAE, same model and mask.

On CUDA it also counts the FLOPs of one ViT-B MAE-3D step (forward + backward,
``torch.utils.flop_counter.FlopCounterMode``; a multiply-add is 2 FLOPs) and prints the achieved
TFLOP/s.

    python bench/pretrain_throughput.py                 # CPU sizes (the bundled encoders' configs)
    python bench/pretrain_throughput.py --vitb          # plus ViT-B MAE-3D, visible-only vs all tokens
    python bench/pretrain_throughput.py --paper         # paper sizes (ViT-B 6x96x96 ...), for GPUs
    python bench/pretrain_throughput.py --mfu --json mfu.json   # ViT-B MAE-3D samples/s and MFU only
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from napari_emseg.data.sampler import PatchBatches, open_sources
from napari_emseg.data.synthetic import make_synthetic_em
from napari_emseg.io import write_volume
from napari_emseg.pretrain import mae3d, mscon, retina
from napari_emseg.pretrain.methods import load_job
from napari_emseg.pretrain.trainer import train
from napari_emseg.progress import drain

MODULES = {"mae3d": mae3d, "mscon": mscon, "retina": retina}
CPU_SIZES = {
    "mae3d": ["model.encoder.vit_size=micro", "model.decoder_width=256", "model.decoder_heads=8",
              "data.patch=4,64,64", "data.batch_size=8"],
    "mscon": ["model.backbone.widths=16,32,64,128", "data.patch=8,64,64", "data.batch_size=2",
              "model.sim_pool=2,8,8", "model.sim_hidden=256"],
    "retina": ["model.backbone.vit_size=micro", "model.backbone.widths=16,32,64,128", "data.patch=1,128,128",
               "data.batch_size=8"],
}
PAPER_SIZES = {
    "mae3d": ["data.batch_size=32"],        # ViT-B, 6x96x96 (paper: 128 over 6 GPUs)
    "mscon": ["data.batch_size=4"],         # ResUNet 16..256, 16x128x128
    "retina": ["data.batch_size=16"],       # TransUNet ViT-B, 224x224
}
COMMON = ["train.tensorboard=false", "train.checkpoint_every=0", "train.preview_every=0", "train.log_every=0"]


def full_encoder_loss(model: mae3d.MAE3D, batch: dict) -> torch.Tensor:
    """Baseline: the same MAE, but the encoder runs on every token (mask tokens replace the
    masked ones before the encoder), as in SimMIM-style masked modelling."""
    x = batch["image"]
    enc = model.encoder
    grid = enc.grid_shape(x.shape[2:])
    tokens = enc.patch_embed(x) + enc.pos_embed(grid)
    mask = mae3d.make_mask(grid, model.cfg.mask_ratio, model.cfg.mask_strategy, x.shape[0], x.device)
    w = model.decoder_embed.in_features
    tokens = torch.where(mask[..., None], torch.zeros(1, 1, w, device=x.device, dtype=tokens.dtype), tokens)
    for blk in enc.blocks:
        tokens = blk(tokens)
    full = model.decoder_embed(enc.norm(tokens)) + model.decoder_pos(grid, tokens)
    for blk in model.decoder_blocks:
        full = blk(full)
    pred = model.decoder_pred(model.decoder_norm(full))
    target, _, _ = model.target(x)
    per = ((pred.float() - target) ** 2).mean(-1)
    return (per * mask).sum() / mask.sum()


class FullEncoderMAE(torch.nn.Module):
    def __init__(self, model: mae3d.MAE3D) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return full_encoder_loss(self.model, batch), {}


def train_rate(objective: torch.nn.Module, batch: dict, cfg, steps: int) -> float:
    """Samples/s of optimiser steps through the shared trainer (after two warm-up steps)."""
    stamps: list[float] = []
    cfg = cfg.replace(max_steps=steps + 2, warmup_fraction=0.0, time_limit_min=None)
    drain(train(objective, itertools.repeat(batch), cfg), show=False,
          callback=lambda e: stamps.append(time.perf_counter()))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    n = batch[next(iter(batch))].shape[0]
    return n * steps / (stamps[-1] - stamps[1])


def data_rate(stream: PatchBatches, batches: int) -> float:
    stream.batch(0)
    t = time.perf_counter()
    for i in range(1, batches + 1):
        stream.batch(i)
    return stream.cfg.batch_size * batches / (time.perf_counter() - t)


def step_flops(objective: torch.nn.Module, batch: dict, device: torch.device) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    objective = objective.to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss, _ = objective(batch)
        loss.backward()
    objective.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def vitb_mfu(args) -> dict:
    """Samples/s and model-FLOP utilisation of MAE-3D pretraining (ViT-B by default) through the
    shared trainer: FLOPs of one step (forward + backward) x steps/s / the GPU's dense bf16 peak."""
    sys.path.insert(0, str(Path(__file__).parent))
    from inference import peak_bf16_tflops  # bench/inference.py

    device = args.device
    patch = ",".join(map(str, args.mfu_patch))
    job = load_job("mae3d", None, [f"model.encoder.vit_size={args.mfu_vit}", f"data.patch={patch}",
                                   f"data.batch_size={args.mfu_batch}", f"train.device={device}", *COMMON])
    torch.manual_seed(0)
    objective = mae3d.build_objective(job)
    xb = {"image": torch.randn(args.mfu_batch, 1, *job.data.patch)}
    flops = step_flops(objective, xb, torch.device(device))
    rate = train_rate(objective, xb, job.train, args.steps)
    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = peak_bf16_tflops(name) if cuda else None
    achieved = flops * rate / args.mfu_batch / 1e12
    print(f"  MAE-3D ViT-{args.mfu_vit} {'x'.join(map(str, job.data.patch))} b{args.mfu_batch} on {name}: "
          f"{flops / 1e12:.3f} TFLOP per step, {rate:.1f} samples/s, {achieved:.1f} TFLOP/s achieved"
          + (f", MFU {achieved / peak:.1%} of the {peak:.0f} TFLOP/s dense bf16 peak" if peak else ""))
    return {"model": f"MAE-3D ViT-{args.mfu_vit}, patch 1x16x16, mask {job.model.mask_ratio}",
            "device": name, "precision": "bf16 autocast" if cuda else "fp32", "input": list(job.data.patch),
            "batch": args.mfu_batch, "steps_timed": args.steps, "tflop_per_step": round(flops / 1e12, 4),
            "samples_per_s": round(rate, 2), "achieved_tflops": round(achieved, 3), "peak_bf16_tflops": peak,
            "mfu": round(achieved / peak, 4) if peak else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps per method")
    p.add_argument("--data-batches", type=int, default=10, help="timed data batches per method")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paper", action="store_true", help="paper-sized models (use on a GPU)")
    p.add_argument("--methods", default="mae3d,mscon,retina")
    p.add_argument("--vitb", action="store_true",
                   help="also the visible-only vs all-token comparison for ViT-B MAE-3D, 6x96x96, batch 2")
    p.add_argument("--mfu", action="store_true",
                   help="only MAE-3D throughput and model-FLOP utilisation (ViT-B, for GPUs)")
    p.add_argument("--mfu-vit", default="base", help="ViT size of the --mfu run (micro for a smoke test)")
    p.add_argument("--mfu-batch", type=int, default=128, help="batch of the --mfu run")
    p.add_argument("--mfu-patch", type=lambda s: [int(v) for v in s.split(",")], default=[6, 96, 96])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the --mfu run")
    p.add_argument("--json", metavar="PATH", help="write the --mfu figures as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.mfu:
        result = vitb_mfu(args)
        if args.json:
            Path(args.json).write_text(json.dumps({"mae3d": result}, indent=2))
        return
    cuda = torch.cuda.is_available()
    sizes = PAPER_SIZES if args.paper else CPU_SIZES
    print(f"device: {torch.cuda.get_device_name(0) if cuda else f'CPU, {args.threads} threads'}; "
          f"sizes: {'paper' if args.paper else 'CPU (bundled encoders)'}")
    with tempfile.TemporaryDirectory() as tmp:
        em = make_synthetic_em(shape=(32, 256, 256), seed=0)
        path = write_volume(Path(tmp) / "em.zarr", em.raw, voxel_size=em.voxel_size)
        print(f"{'method':<28} {'patch':>12} {'batch':>5} {'data samples/s':>15} {'train samples/s':>16}")
        for method in args.methods.split(","):
            job = load_job(method, None, [*sizes[method], *COMMON])
            module = MODULES[method]
            stream = PatchBatches(open_sources([path], job.data), job.data, module.make_transform(job))
            d = data_rate(stream, args.data_batches)
            torch.manual_seed(0)
            objective = module.build_objective(job)
            batch = stream.batch(1)
            t = train_rate(objective, batch, job.train, args.steps)
            patch = "x".join(map(str, job.data.patch))
            print(f"{method:<28} {patch:>12} {job.data.batch_size:>5} {d:>15.1f} {t:>16.2f}")
            if method == "mae3d":
                torch.manual_seed(0)
                base = FullEncoderMAE(module.build_objective(job))
                tb = train_rate(base, batch, job.train, args.steps)
                print(f"{'  baseline: encoder on all':<28} {patch:>12} {job.data.batch_size:>5} {'':>15} {tb:>16.2f}"
                      f"   visible-only speed-up x{t / tb:.2f}")
                if args.vitb:
                    vb = load_job("mae3d", None, ["data.batch_size=2", *COMMON])
                    xb = {"image": torch.randn(2, 1, *vb.data.patch)}
                    torch.manual_seed(0)
                    r_vis = train_rate(module.build_objective(vb), xb, vb.train, args.steps)
                    torch.manual_seed(0)
                    r_all = train_rate(FullEncoderMAE(module.build_objective(vb)), xb, vb.train, args.steps)
                    print(f"{'mae3d ViT-B (paper model)':<28} {'6x96x96':>12} {2:>5} {'':>15} {r_vis:>16.2f}")
                    print(f"{'  baseline: encoder on all':<28} {'6x96x96':>12} {2:>5} {'':>15} {r_all:>16.2f}"
                          f"   visible-only speed-up x{r_vis / r_all:.2f}")
                if cuda:
                    big = load_job("mae3d", None, ["data.batch_size=32", *COMMON])
                    torch.manual_seed(0)
                    vitb = mae3d.build_objective(big)
                    xb = {"image": torch.randn(32, 1, *big.data.patch)}
                    flops = step_flops(vitb, xb, torch.device("cuda"))
                    rate = train_rate(vitb, xb, big.train, args.steps)
                    print(f"  ViT-B MAE-3D 6x96x96 b32: {flops / 1e12:.3f} TFLOP per step, {rate:.1f} samples/s, "
                          f"{flops * rate / 32 / 1e12:.1f} TFLOP/s achieved (bf16 autocast)")


if __name__ == "__main__":
    main()

"""Parameters, FLOPs and latency per patch of every architecture, at a few sizes.

Usage::

    python bench/models.py                 # all rows, CPU (and CUDA when available)
    python bench/models.py --quick         # skip ViT-S / ViT-B rows
    python bench/models.py --repeats 5 --threads 2

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2
FLOPs; attention counted through PyTorch's math kernel so it is not missed). Latency is the
median forward time of one batch-1 patch under ``torch.no_grad()`` after one warm-up run.

Baselines printed beside ours:
* MONAI's own ``UNETR`` (16^3 patches only) against ours with the same 16^3 patch, same input:
  the composition must cost the same;
* the MAE-3D paper's ViT-B UNETR (Cheng et al. 2023, Table 3: 138 ms per 6x96x96 batch-1
  patch on an RTX 3090, and "154" in the column headed Params, in millions).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from napari_emseg.models.build import ModelConfig, build_model, count_parameters

ROWS: list[tuple[str, ModelConfig, tuple[int, int, int], bool]] = [
    # name, config, patch (z, y, x), heavy
    ("UNETR ViT-micro 1x16x16", ModelConfig(arch="unetr", vit_size="micro"), (6, 96, 96), False),
    ("UNETR ViT-T 1x16x16", ModelConfig(arch="unetr", vit_size="tiny"), (6, 96, 96), False),
    ("UNETR ViT-S 1x16x16", ModelConfig(arch="unetr", vit_size="small"), (6, 96, 96), True),
    ("UNETR ViT-B 1x16x16 (MAE-3D)", ModelConfig(arch="unetr", vit_size="base"), (6, 96, 96), True),
    ("UNETR ViT-T 1x16x16", ModelConfig(arch="unetr", vit_size="tiny"), (16, 128, 128), False),
    ("UNETR ViT-T 4x16x16", ModelConfig(arch="unetr", vit_size="tiny", patch_size=(4, 16, 16)), (16, 128, 128), False),
    ("ResUNet-3D 16..256", ModelConfig(arch="resunet"), (8, 96, 96), False),
    ("ResUNet-3D 16..256", ModelConfig(arch="resunet"), (16, 128, 128), False),
    ("ResUNet-3D 32..512", ModelConfig(arch="resunet", widths=(32, 64, 128, 256, 512)), (16, 128, 128), True),
    ("TransUNet-2D ViT-T (1 slice)", ModelConfig(arch="transunet2d"), (1, 256, 256), False),
    ("TransUNet-2D ViT-T (6 slices)", ModelConfig(arch="transunet2d"), (6, 96, 96), False),
    ("TransUNet-2D ViT-B (1 slice)", ModelConfig(arch="transunet2d", vit_size="base"), (1, 256, 256), True),
]


def flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    cuda = x.is_cuda
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            if i:  # the first run warms up
                times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def monai_unetr_baseline(repeats: int) -> None:
    """Ours vs MONAI's UNETR: ViT-T, 16^3 patches, one 16x96x96 patch."""
    from monai.networks.nets import UNETR as MonaiUNETR

    shape = (16, 96, 96)
    ours = build_model(ModelConfig(arch="unetr", vit_size="tiny", patch_size=(16, 16, 16))).eval()
    theirs = MonaiUNETR(1, 3, img_size=shape, feature_size=16, hidden_size=192, mlp_dim=768, num_heads=3,
                        proj_type="conv", norm_name="instance", res_block=True, qkv_bias=True).eval()
    x = torch.randn(1, 1, *shape)
    # interleaved, so that load from other processes hits both alike
    runs = [(latency_ms(ours, x, 1), latency_ms(theirs, x, 1)) for _ in range(max(repeats, 3))]
    a, b = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    fa, fb = flops(ours, x), flops(theirs, x)
    pa, pb = count_parameters(ours), count_parameters(theirs)
    print(f"\nbaseline: MONAI UNETR (16^3 patch, ViT-T) on 1x{'x'.join(map(str, shape))}, CPU")
    print(f"  ours  {pa / 1e6:7.2f} M params {fa / 1e9:7.2f} GFLOPs {a:8.1f} ms")
    print(f"  MONAI {pb / 1e6:7.2f} M params {fb / 1e9:7.2f} GFLOPs {b:8.1f} ms")
    print(f"  ratio ours/MONAI: params {pa / pb:.3f}, FLOPs {fa / fb:.3f}, latency {a / b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the heavy rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    dev = f"CUDA {torch.cuda.get_device_name()}" if cuda else "no CUDA"
    print(f"torch {torch.__version__}, {args.threads} CPU threads, {dev}; batch 1, forward, no_grad, fp32")
    head = f"{'architecture':32} {'patch':>11} {'params M':>9} {'enc M':>7} {'GFLOPs':>8} {'CPU ms':>8}"
    print(head + (f" {'CUDA ms':>8}" if cuda else ""))
    for name, cfg, shape, heavy in ROWS:
        if heavy and args.quick:
            continue
        model = build_model(cfg).eval()
        x = torch.randn(1, 1, *shape)
        line = (f"{name:32} {'x'.join(map(str, shape)):>11} {count_parameters(model) / 1e6:9.2f} "
                f"{count_parameters(model, 'encoder') / 1e6:7.2f} {flops(model, x) / 1e9:8.2f} "
                f"{latency_ms(model, x, args.repeats):8.1f}")
        if cuda:
            line += f" {latency_ms(model.cuda(), x.cuda(), max(args.repeats, 10)):8.2f}"
        print(line, flush=True)
        if "MAE-3D" in name:
            print(f"{'  MAE-3D paper (RTX 3090)':32} {'6x96x96':>11} {'154?':>9} {'':>7} {'':>8} "
                  f"{'':>8}{' 138 (GPU)':>9}")
        del model
    monai_unetr_baseline(args.repeats)
    print("\nMAE-3D Table 3 reports ViT-B UNETR at 138 ms per 6x96x96 batch-1 patch (RTX 3090) and 154 in the")
    print("column headed Params (million); read as GFLOPs it compares with the GFLOPs column above.")


if __name__ == "__main__":
    main()

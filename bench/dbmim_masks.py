"""What dbMiM's learned masking does, in a short CPU run: policy masks against random masks.

Two MAE-3D runs with the same seed, data, model and steps on the Gerhard et al. 2013 VNC stack
(sections 0-13 train, 14-19 held out), one with ``mask_strategy="random"``, one with
``"dbmim"``. Both are then scored on the same held-out patches: the masked-token reconstruction
loss under random masks and under the dbMiM run's policy masks (sampled and greedy), and how the
policy's per-token "mask me" score relates to what the token shows (Spearman correlation with
its membrane fraction and its intensity standard deviation). Writes a JSON summary and a figure
(a held-out section with the policy's masked tokens, its score map, both runs' training losses;
drawn with PIL).

    python bench/dbmim_masks.py --out /tmp/dbmim            # about 3 minutes, one thread
    python bench/dbmim_masks.py --steps 20 --out /tmp/smoke  # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_emseg.models.build import ModelConfig
from napari_emseg.pretrain.mae3d import MAE3D, MAE3DConfig, make_mask, n_visible, patchify

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc-gerhard2013" / "vnc_stack1.npz"


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(path)
    raw = d["raw"].astype(np.float32)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    return (np.clip((raw - lo) / (hi - lo), 0, 1) * 2 - 1).astype(np.float32), d["membranes"]


def cut(raw, mem, rng, n, z_range, patch):
    out, mm = [], []
    for _ in range(n):
        z = rng.integers(z_range[0], z_range[1] - patch[0] + 1)
        y, x = rng.integers(0, raw.shape[1] - patch[1]), rng.integers(0, raw.shape[2] - patch[2])
        out.append(raw[z:z + patch[0], y:y + patch[1], x:x + patch[2]])
        mm.append(mem[z:z + patch[0], y:y + patch[1], x:x + patch[2]])
    return torch.from_numpy(np.stack(out))[:, None], torch.from_numpy(np.stack(mm).astype(np.float32))[:, None]


def masked_loss(model: MAE3D, x: torch.Tensor, mask: torch.Tensor) -> float:
    with torch.no_grad():
        pred, mask, _ = model.run(x, mask)
        target, _, _ = model.target(x)
        per = ((pred - target) ** 2).mean(-1)
        return float((per * mask).sum() / mask.sum())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--patch", default="4,64,64")
    p.add_argument("--token", default="1,16,16", help="the ViT's patch (token) size z,y,x")
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--raw-target", action="store_true",
                   help="reconstruct raw intensities (norm_pix_loss off): the MAE leaves its plateau sooner")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    patch = tuple(int(v) for v in a.patch.split(","))
    raw, mem = load(a.data)
    a.out.mkdir(parents=True, exist_ok=True)
    tok = tuple(int(v) for v in a.token.split(","))
    enc = ModelConfig(arch="vit3d", vit_size="micro", patch_size=tok)
    runs, curves = {}, {}
    for strategy in ("random", "dbmim"):
        torch.manual_seed(a.seed)
        model = MAE3D(MAE3DConfig(encoder=enc, mask_ratio=a.ratio, mask_strategy=strategy, decoder_width=64,
                                  decoder_heads=4, decoder_depth=2, norm_pix_loss=not a.raw_target))
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.005)
        rng, curve, t0 = np.random.default_rng(a.seed), [], time.perf_counter()
        for _ in range(a.steps):
            x, _ = cut(raw, mem, rng, a.batch, (0, 14), patch)
            loss, m = model({"image": x})
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(m.get("rec_loss", float(loss.detach())))
        runs[strategy], curves[strategy] = model.eval(), curve
        print(f"{strategy}: {a.steps} steps in {time.perf_counter() - t0:.0f} s, last-50 rec loss "
              f"{np.mean(curve[-50:]):.3f}", flush=True)
    x, mm = cut(raw, mem, np.random.default_rng(1234), 64, (14, 20), patch)
    grid = tuple(s // q for s, q in zip(patch, tok))
    keep = n_visible(grid, a.ratio, "random")
    gen = torch.Generator().manual_seed(7)
    random_masks = [make_mask(grid, a.ratio, "random", len(x), generator=gen) for _ in range(5)]
    db = runs["dbmim"]
    with torch.no_grad():
        tokens = db.encoder.patch_embed(x) + db.encoder.pos_embed(grid)
        score, _ = db.policy.scores(tokens)
        torch.manual_seed(5)
        sampled = [db.policy(tokens, keep)[0] for _ in range(5)]
        greedy = db.policy(tokens, keep, greedy=True)[0]
    res = {"steps": a.steps, "patch": list(patch), "token": list(tok), "norm_pix_loss": not a.raw_target, "mask_ratio": a.ratio, "visible_tokens": keep,
           "tokens": int(np.prod(grid)), "batch": a.batch, "lr": a.lr, "seed": a.seed, "held_out_patches": len(x),
           "train_rec_loss_last50": {k: float(np.mean(v[-50:])) for k, v in curves.items()}}
    for name, model in runs.items():
        res[f"{name}_run"] = {
            "random_masks": float(np.mean([masked_loss(model, x, m) for m in random_masks])),
            "policy_masks_sampled": float(np.mean([masked_loss(model, x, m) for m in sampled])),
            "policy_masks_greedy": masked_loss(model, x, greedy)}
    tok_mem = patchify(mm, tok).mean(-1).flatten().numpy()
    tok_std = patchify(x, tok).std(-1).flatten().numpy()
    s = score.flatten().numpy()
    res["score_vs_membrane_fraction_spearman"] = spearman(s, tok_mem)
    res["score_vs_intensity_std_spearman"] = spearman(s, tok_std)
    res["greedy_masked_membrane_fraction"] = float(patchify(mm, tok).mean(-1)[greedy].mean())
    res["greedy_visible_membrane_fraction"] = float(patchify(mm, tok).mean(-1)[~greedy].mean())
    (a.out / "dbmim_masks.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    figure(a.out / "dbmim_masks.png", x, greedy, score, grid, tok, curves)


def figure(path: Path, x, mask, score, grid, tok, curves) -> None:
    """Three panels with PIL (no plotting library needed): a held-out section with the greedy
    policy's masked tokens in red, the policy's score map (dark = keep, bright = mask), and both
    runs' smoothed training losses (random: grey, dbMiM: red)."""
    from PIL import Image, ImageDraw

    i, z = 0, grid[0] // 2
    per = grid[1] * grid[2]
    img = (x[i, 0, z].numpy() + 1) * 127.5
    m = np.kron(mask[i, z * per:(z + 1) * per].reshape(grid[1:]).numpy(), np.ones(tok[1:]))
    rgb = np.stack([img * (1 - 0.45 * m) + 255 * 0.45 * m, img * (1 - 0.45 * m), img * (1 - 0.45 * m)], -1)
    sc = score[i, z * per:(z + 1) * per].reshape(grid[1:]).numpy()
    sc = np.kron((sc - sc.min()) / (np.ptp(sc) + 1e-9), np.ones(tok[1:])) * 255
    size = 256
    panels = [Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((size, size), Image.NEAREST),
              Image.fromarray(sc.astype(np.uint8)).convert("RGB").resize((size, size), Image.NEAREST)]
    plot = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(plot)
    k = 25
    smooth = {n: np.convolve(c, np.ones(k) / k, mode="valid") for n, c in curves.items()}
    lo = min(float(v.min()) for v in smooth.values())
    hi = max(float(v.max()) for v in smooth.values())
    for name, colour in (("random", (120, 120, 120)), ("dbmim", (220, 30, 30))):
        v = smooth[name]
        pts = [(10 + (size - 20) * t / max(1, len(v) - 1), size - 10 - (size - 20) * (float(y) - lo) / (hi - lo + 1e-9))
               for t, y in enumerate(v)]
        draw.line(pts, fill=colour, width=2)
    draw.text((12, 4), f"train loss {hi:.2f}..{lo:.2f}; grey random, red dbMiM", fill=(0, 0, 0))
    out = Image.new("RGB", (3 * size + 20, size), "white")
    for n, panel in enumerate([*panels, plot]):
        out.paste(panel, (n * (size + 10), 0))
    out.save(path)


if __name__ == "__main__":
    main()

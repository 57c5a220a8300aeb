"""Is MS-Con's L_sim informative? Cosine of matching vs unrelated pooled vectors (docs/pretraining.md).

ISBI 2012 (``../shared/data``, read in place; skipped with a message when absent): 8 random
8 x 64 x 64 patches, weak and strong views of each (the MS-Con job's augmentations), through the
bundled MS-Con encoder; for 20 draws of one random channel per level, the pooled L_sim vectors
(:func:`napari_emseg.pretrain.mscon.sim_vectors`) of the weak view against those of the strong
view: the diagonal pairs are matching views, the rest unrelated patches. Printed for the three
centrings (none, over positions = ``sample``, then over the batch too = ``batch``): the median
cosine of each kind, the 5-95 % range of the unrelated ones and the AUC matching vs unrelated.

    python bench/mscon_sim.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "isbi2012_train.npz"


def auc(pos: list[float], neg: list[float]) -> float:
    return float(np.mean([[p > n for n in neg] for p in pos]))


def main(path: Path = DATA, batch: int = 8) -> int:
    if not path.exists():
        print(f"skipped: {path} is not here (the benchmark reads it in place)")
        return 0
    from napari_emseg.models.checkpoint import load_model
    from napari_emseg.models.registry import get_encoder
    from napari_emseg.pretrain.mscon import MSConJob, MSConViews, sim_vectors

    torch.set_num_threads(1)
    raw = np.load(path)["raw"].astype(np.float32)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    raw = (raw - lo) / (hi - lo) * 2 - 1
    net = load_model(get_encoder("mscon-resunet-small-drosophila-vnc").location)
    rng = np.random.default_rng(0)
    patches = []
    for _ in range(batch):
        z, y, x = rng.integers(0, raw.shape[0] - 8), rng.integers(0, raw.shape[1] - 64), rng.integers(0, raw.shape[2] - 64)
        patches.append(raw[z:z + 8, y:y + 64, x:x + 64])
    job = MSConJob()
    views = MSConViews(job.weak, job.strong, "weak")(np.stack(patches), np.random.default_rng(1))
    with torch.no_grad():
        _, fw = net(torch.from_numpy(views["weak"]), return_features=True)
        _, fs = net(torch.from_numpy(views["strong"]), return_features=True)
    off_diagonal = ~torch.eye(batch, dtype=torch.bool)
    for mode in ("none", "sample", "batch"):
        pos: list[float] = []
        neg: list[float] = []
        for trial in range(20):
            g = torch.Generator().manual_seed(trial)
            chans = [int(torch.randint(f.shape[1], (1,), generator=g)) for f in fw]
            w = sim_vectors(fw, chans, (4, 16, 16), mode != "none")
            s = sim_vectors(fs, chans, (4, 16, 16), mode != "none")
            if mode == "batch":
                w, s = w - w.mean(0, keepdim=True), s - s.mean(0, keepdim=True)
            c = torch.nn.functional.normalize(w, dim=1) @ torch.nn.functional.normalize(s, dim=1).T
            pos += c.diag().tolist()
            neg += c[off_diagonal].tolist()
        print(f"{mode:6s}: matching views median {np.median(pos):.3f}, unrelated median {np.median(neg):.3f} "
              f"[5-95 % {np.percentile(neg, 5):.3f}, {np.percentile(neg, 95):.3f}], AUC {auc(pos, neg):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

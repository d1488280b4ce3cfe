"""Design probe for lab-dino's image tokens: a linear probe on Fashion-MNIST (2000 train, 1000
held out) of what LLaVA would hand the projector at 28 px (2x2 patches): the last layer before
DINOv2's final norm (``hidden_states[-1]``, what LLaVA reads) against after it, the four patch
tokens concatenated against their mean, and the images as stored (light on black) against
inverted (dark on white, as product photos are).

    python benchmarks/dino/fashion_design_probe.py
"""

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from stv.data.fashion import fashion_images
from stv.experiments.lab.dino import backbone

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

if __name__ == "__main__":
    torch.set_num_threads(1)
    images, labels = fashion_images("train")
    x_all, y = images[:3000] / 255.0, labels[:3000]
    model = backbone()
    for invert in (False, True):
        x = torch.tensor(1 - x_all if invert else x_all, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
        start = time.perf_counter()
        with torch.no_grad():
            out = [model(pixel_values=(x[i : i + 100] - MEAN) / STD, output_hidden_states=True) for i in range(0, 3000, 100)]
        pre = torch.cat([o.hidden_states[-1][:, 1:] for o in out])  # (N, 4, 384)
        post = torch.cat([o.last_hidden_state[:, 1:] for o in out])
        for name, f in (("pre-norm", pre), ("post-norm", post)):
            for pool, feats in (("concat", f.flatten(1)), ("mean", f.mean(1))):
                feats = feats.numpy()
                feats = (feats - feats[:2000].mean(0)) / (feats[:2000].std(0) + 1e-6)
                acc = LogisticRegression(max_iter=3000).fit(feats[:2000], y[:2000]).score(feats[2000:], y[2000:])
                print(f"invert={invert} {name} {pool}: {acc:.3f}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)

"""The same linear probe on Fashion-MNIST (Debian's dataset-fashion-mnist, IDX files): 2000
training images, 1000 held out, DINOv2 features at 28 and 56 px against raw pixels.

    python benchmarks/dino/fashion_probe.py /usr/share/datasets/fashion-mnist
"""

import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parent))
from linear_probe import backbone, features  # noqa: E402


def idx(root: str, name: str) -> np.ndarray:
    """An IDX file's labels (N,) or images (N, 28, 28)."""
    with gzip.open(f"{root}/{name}", "rb") as f:
        data = f.read()
    if "labels" in name:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


if __name__ == "__main__":
    torch.set_num_threads(1)
    root = sys.argv[1]
    x = idx(root, "train-images-idx3-ubyte.gz")[:3000] / 255.0
    y = idx(root, "train-labels-idx1-ubyte.gz")[:3000]
    model = backbone()
    for size in (28, 56):
        start = time.perf_counter()
        feats = features(model, x, size, "mean").numpy()
        accuracy = LogisticRegression(max_iter=3000).fit(feats[:2000], y[:2000]).score(feats[2000:], y[2000:])
        print(f"fashion-mnist {size} px mean: {accuracy:.3f} ({time.perf_counter() - start:.0f} s)")
    raw = x.reshape(len(x), -1)
    print(f"raw pixels: {LogisticRegression(max_iter=3000).fit(raw[:2000], y[:2000]).score(raw[2000:], y[2000:]):.3f}")

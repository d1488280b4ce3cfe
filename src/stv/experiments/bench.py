"""`stv bench`: performance ratios, each of two things run side by side in one process.

Timings are printed and written to benchmarks/RESULTS.md, never asserted in tests. Every
measurement runs on the CPU machine unless a CUDA device is given.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.digits import digit_examples
from ..hooks.heads import write_heads
from ..methods.bank import build_bank
from ..methods.fit import scan_pairs
from ..methods.mtv import MTVConfig, fit_mtv
from ..methods.reward import first_token_ids
from ..methods.scan import record_prompts, sensitivity_scan
from ..models import LMM
from ..report import section, table
from ..tasks import DIGITS


def _timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls (after ``warmup``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@dataclass
class Subject:
    """A model to benchmark, with the name its rows carry."""

    name: str
    lmm: LMM
    image_size: int = 32  # digits are rendered at this size; more pixels -> more image tokens


def subjects(quick: bool = False) -> list[Subject]:
    """The lab model and a tiny Qwen2-VL build (multimodal RoPE, many image tokens)."""
    from .. import load_model
    from ..testing import build
    from .lab import load_lab

    out = [Subject("lab (llava, 4x4 heads, 1 token/image)", load_lab())]
    if not quick:
        tiny = build("qwen2_vl", Path(tempfile.mkdtemp(prefix="stv-bench-")) / "qwen2_vl")
        out.append(Subject("tiny qwen2_vl (2x4 heads, 4 tokens/image)", load_model(tiny)))
    return out


def mid_qwen2_vl() -> Subject:
    """A 26M-parameter Qwen2-VL (8 layers x 8 heads of 64, random weights) on 112x112 images
    (49 tokens each): big enough that arithmetic, not Python dispatch, dominates on this CPU."""
    import shutil

    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    from .. import load_model
    from ..testing import build

    folder = build("qwen2_vl", Path(tempfile.mkdtemp(prefix="stv-bench-")) / "mid")
    config = AutoConfig.from_pretrained(folder)
    t = config.text_config
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 512, 1408, 8
    t.num_attention_heads = t.num_key_value_heads = 8
    t.layer_types = ["full_attention"] * t.num_hidden_layers
    t.rope_parameters["mrope_section"] = [8, 12, 12]  # sums to head_dim / 2 = 32
    config.vision_config.hidden_size = 512
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    lmm = load_model(folder)
    lmm.processor.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": 112 * 112}
    shutil.rmtree(folder, ignore_errors=True)
    return Subject("mid qwen2_vl (8x8 heads of 64, 26M params, 49 tokens/image)", lmm, image_size=112)


def _prompt(n_images: int, seed: int = 0, size: int = 32):
    ex = digit_examples("parity_AB", size=size)
    rng = np.random.default_rng(seed)
    picks = [ex[i] for i in rng.choice(len(ex), n_images, replace=False)]
    return DIGITS.prompt(picks[:-1], picks[-1])


# the columns of the scoring and inference tables (shared with bench_gpu)
SCORING_KEYS = ["images", "tokens", "naive_ms", "cached_ms", "ratio", "pooled_ms", "pooled_ratio", "max_reward_diff"]
INFERENCE_KEYS = [
    "batch",
    "zero_shot_ms",
    "inserted_ms",
    "icl16_ms",
    "icl_shots",
    "overhead_pct",
    "vs_icl16",
    "heads_written",
]


# 1 ---------------------------------------------------------------- REINFORCE scoring
def bench_scoring(subject: Subject, images=(1, 4, 16), samples: int = 32, k: int = 8, repeats: int = 3) -> list[dict]:
    """REINFORCE scoring per step: naive per-sample forwards vs one prefix-cached batch (and a pooled prefix)."""
    lmm = subject.lmm
    locations = lmm.heads.random_locations(k, np.random.default_rng(0))
    bank = torch.randn(len(locations), samples, lmm.heads.head_dim)
    rows = bank.transpose(0, 1)  # (S, K, D): sample s writes bank[:, s]
    rows_out = []
    for n in images:
        prompt = _prompt(n, size=subject.image_size)
        target = first_token_ids(lmm, [digit_examples("parity_AB")[0]], DIGITS)
        inputs = lmm.prepare([prompt])

        def naive():
            out = []
            for s in range(samples):
                with write_heads(lmm.model, lmm.heads, locations, rows[s]), torch.inference_mode():
                    logits = lmm.model(**inputs, use_cache=False).logits[:, -1].float()
                out.append(torch.log_softmax(logits, -1)[0, target[0]])
            return torch.stack(out)

        def cached():
            prefix = lmm.prefix([prompt])
            with lmm.candidates(locations, rows, samples):
                logits = lmm.last_token_logits(prefix, repeats=samples)
            return torch.log_softmax(logits, -1)[:, target[0]]

        pooled_prefix = lmm.prefix([prompt])

        def pooled():  # prefix_pool > 0: the step reuses a stored prefix (copied)
            with lmm.candidates(locations, rows, samples):
                logits = lmm.last_token_logits(pooled_prefix, repeats=samples, keep=True)
            return torch.log_softmax(logits, -1)[:, target[0]]

        reference = naive()
        diff = max(float((reference - cached()).abs().max()), float((reference - pooled()).abs().max()))
        t_naive, t_cached, t_pooled = _timeit(naive, repeats), _timeit(cached, repeats), _timeit(pooled, repeats)
        rows_out.append(
            {
                "subject": subject.name,
                "images": n,
                "tokens": int(inputs["input_ids"].shape[1]),
                "naive_ms": 1000 * t_naive,
                "cached_ms": 1000 * t_cached,
                "ratio": t_naive / t_cached,
                "pooled_ms": 1000 * t_pooled,
                "pooled_ratio": t_naive / t_pooled,
                "max_reward_diff": diff,
            }
        )
    return rows_out


# 2 ---------------------------------------------------------------- location search
def bench_location_search(
    subject: Subject, pairs: int = 100, shots: int = 4, steps: int = 600, samples: int = 32
) -> dict:
    """STV's scan + bank vs MTV's mean activations + Bernoulli REINFORCE over all heads,
    at the papers' settings (T=100 x 4-shot; 600 steps x 32 samples), both prefix-cached."""
    lmm, train = subject.lmm, digit_examples("parity_AB")
    k = min(64, lmm.heads.num_layers * lmm.heads.num_heads // 2)
    start = time.perf_counter()
    scan = sensitivity_scan(lmm, scan_pairs(train, DIGITS, pairs, shots, np.random.default_rng(0)), 25, progress=False)
    t_scan = time.perf_counter() - start
    build_bank(scan.activations_at(scan.top_k(k)), 32)
    t_stv = time.perf_counter() - start
    log = fit_mtv(
        lmm, train, MTVConfig(prompts=pairs, shots=shots, steps=steps, samples=samples, batch_size=25), progress=False
    ).log
    t_mtv = log.timings["means"] + log.timings["search"]
    return {
        "subject": subject.name,
        "stv_scan_s": t_scan,
        "stv_scan_bank_s": t_stv,
        "mtv_search_s": t_mtv,
        "reduction_pct": 100 * (1 - t_stv / t_mtv),
        "forward_passes_stv": 2 * pairs,
        "forward_passes_mtv": pairs + steps * 2,
    }


# 3 ---------------------------------------------------------------- inference overhead
def bench_inference(
    subject: Subject,
    batch: int = 16,
    new_tokens: int = 8,
    repeats: int = 5,
    heads: int | None = None,
    icl_shots: int = 16,
) -> dict:
    """Generation with and without inserted vectors on the same prompts: the hooks' overhead
    (``heads`` written, by default half of all), and against ``icl_shots``-shot ICL."""
    lmm, ex = subject.lmm, digit_examples("size_word", size=subject.image_size)
    rng = np.random.default_rng(0)
    queries = ex[:batch]
    zero = [DIGITS.prompt([], q) for q in queries]
    icl = [DIGITS.prompt([ex[i] for i in rng.choice(len(ex), icl_shots, replace=False)], q) for q in queries]
    every = lmm.heads.all_locations()
    locs = every[: heads or max(1, len(every) // 2)]
    vecs = torch.randn(len(locs), lmm.heads.head_dim)

    def gen(prompts):
        return lambda: lmm.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    def with_vectors():
        with write_heads(lmm.model, lmm.heads, locs, vecs):
            lmm.generate(zero, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    # interleave the two zero-shot variants so drift on a shared machine hits both alike
    plain, inserted = [], []
    for _ in range(repeats):
        plain.append(_timeit(gen(zero), 1, warmup=0))
        inserted.append(_timeit(with_vectors, 1, warmup=0))
    t_plain, t_vec = float(np.median(plain)), float(np.median(inserted))
    t_icl = _timeit(gen(icl), repeats)
    return {
        "subject": subject.name,
        "batch": batch,
        "zero_shot_ms": 1000 * t_plain,
        "inserted_ms": 1000 * t_vec,
        "icl16_ms": 1000 * t_icl,
        "overhead_pct": 100 * (t_vec / t_plain - 1),
        "vs_icl16": t_vec / t_icl,
        "icl_shots": icl_shots,
        "heads_written": len(locs),
    }


# 4 + 5 ----------------------------------------------------------- scaling and batching
_SCALING_CHILD = r"""
import json, resource, sys, time, numpy as np, torch
torch.set_num_threads(1)
from stv.experiments.lab import load_lab
from stv.data.digits import digit_examples
from stv.methods.fit import scan_pairs
from stv.methods.scan import sensitivity_scan
from stv.tasks import DIGITS
n, shots, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lmm = load_lab()
model_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
train = digit_examples("parity_AB")
pairs = scan_pairs(train * 2, DIGITS, n, shots, np.random.default_rng(0))
record = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sensitivity_scan(lmm, pairs[:batch], batch, progress=False)  # warm-up; the high-water mark so far is the baseline
base = record()
start = time.perf_counter()
sensitivity_scan(lmm, pairs, batch, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": record() / 1024,
                  "after_model_mb": model_mb, "peak_growth_mb": (record() - base) / 1024}))
"""


def _child(n: int, shots: int, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCALING_CHILD, str(n), str(shots), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_scaling(examples=(100, 300, 1000), shots=(1, 4, 16), batch: int = 25) -> dict:
    """Scan (activation collection) time and peak RSS beyond the model, each in a fresh process."""
    by_n = [{"examples": n, "shots": 4, **_child(n, 4, batch)} for n in examples]
    by_shots = [{"examples": 100, "shots": s, **_child(100, s, batch)} for s in shots]
    return {"by_examples": by_n, "by_shots": by_shots}


def bench_batching(subject: Subject, n: int = 64, batch: int = 16) -> dict:
    """Activation recording batched vs one prompt at a time, on the same prompts."""
    lmm, train = subject.lmm, digit_examples("parity_AB")
    prompts = [c for _, c in scan_pairs(train, DIGITS, n, 4, np.random.default_rng(0))]

    def run(size: int):
        return lambda: [record_prompts(lmm, prompts[i : i + size]) for i in range(0, n, size)]

    t1, tb = _timeit(run(1), 1), _timeit(run(batch), 1)
    return {
        "subject": subject.name,
        "prompts": n,
        "batch": batch,
        "batch1_per_s": n / t1,
        "batched_per_s": n / tb,
        "speedup": t1 / tb,
    }


# ------------------------------------------------------------------------------ driver
def run_all(quick: bool = False, only: str = "all") -> list[str]:
    """Every benchmark section (``only``: just the real-model one) as markdown lines."""
    import transformers

    torch.set_num_threads(1)
    lines = [
        f"# stv bench — {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, device cpu.",
        f"Command: `stv bench{' --quick' if quick else ''}{'' if only == 'all' else ' --only ' + only}`.",
    ]
    if only in ("all", "smollm2"):
        from .bench_real import real_sections  # loads SmolLM2: only when asked

        real_sections(quick, lines)
    if only == "smollm2":
        return lines
    subs = subjects(quick)
    with section("1. REINFORCE scoring: prefix-cached batch vs naive forward per sample (32 samples)", lines):
        rows = [r for s in subs for r in bench_scoring(s, images=(1, 4) if quick else (1, 4, 16))]
        mid = None if quick else mid_qwen2_vl()
        if mid is not None:
            rows += bench_scoring(mid, images=(1, 4), repeats=1)
        table(rows, ["subject", *SCORING_KEYS], lines)
    with section("2. Location search: STV scan + bank vs MTV mean + head search (papers' settings)", lines):
        rows = [bench_location_search(s, steps=60 if quick else 600) for s in subs]
        table(
            rows,
            [
                "subject",
                "stv_scan_s",
                "stv_scan_bank_s",
                "mtv_search_s",
                "reduction_pct",
                "forward_passes_stv",
                "forward_passes_mtv",
            ],
            lines,
        )
    with section("3. Inference: zero-shot + inserted vectors vs plain zero-shot and vs 16-shot ICL", lines):
        rows = [bench_inference(s) for s in subs]
        if mid is not None:
            rows.append(bench_inference(mid, batch=4, repeats=3))
        table(rows, ["subject", *INFERENCE_KEYS], lines)
    with section("4. Scaling of activation collection (lab model, fresh process each, batch 25)", lines):
        result = bench_scaling(
            examples=(100, 300) if quick else (100, 300, 1000), shots=(1, 4) if quick else (1, 4, 16)
        )
        keys = ["examples", "shots", "seconds", "after_model_mb", "peak_rss_mb", "peak_growth_mb"]
        table(result["by_examples"], keys, lines)
        table(result["by_shots"], keys, lines)
    with section("5. Batching: batched vs batch-1 activation collection", lines):
        rows = [bench_batching(s) for s in subs]
        table(rows, ["subject", "prompts", "batch", "batch1_per_s", "batched_per_s", "speedup"], lines)
    return lines

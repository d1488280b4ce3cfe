"""Gradient refinement: it learns through the write hooks, never touches the weights, keeps a
correction only when held-out queries score better, and plugs into a fit at the written heads
or at every location."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stv.config import STVConfig
from stv.data import Example, load_dataset
from stv.errors import StvError
from stv.methods.fit import fit
from stv.methods.refine import _best_start, _judge, _Queries, answer_queries, refine, refined, steered, unreplaced
from stv.methods.reward import first_token_ids
from stv.tasks import task_for
from stv.vectors import TaskVectors, TaskVectorsConfig


def _steps(steps: int, lr: float, objective: str = "first_token") -> STVConfig:
    """Refinement settings: ``steps`` Adam steps at ``lr`` on ``objective``."""
    return STVConfig(refine=steps, refine_lr=lr, refine_objective=objective)  # type: ignore[arg-type]


def constant_answer_examples(n: int, answer: str = "yes") -> list[Example]:
    """Queries that all have the same one-word answer: learnable by a correction at the heads alone."""
    rng = np.random.default_rng(0)
    return [
        Example(str(i), [], " ".join(rng.choice(list("abcdefgh"), 3)), [answer], metadata={"dataset": "digits:text"})
        for i in range(n)
    ]


def every_head_left_alone(lmm) -> TaskVectors:
    every = lmm.heads.all_locations()
    nan = torch.full((len(every), lmm.heads.head_dim), float("nan"))  # (n, D): each head keeps its own output
    return TaskVectors(torch.tensor(every), nan, config=TaskVectorsConfig(policy="prompt_last"))


def test_refinement_learns_an_answer_through_the_hooks_and_leaves_the_weights(lmm_of):
    """A random tiny model never says "yes"; a correction learned at its heads makes it say it
    on held-out queries (the gradient reaches the written values), with the weights unchanged."""
    lmm = lmm_of("llama")
    train = constant_answer_examples(96)
    task = task_for(train)
    weights = {k: v.clone() for k, v in lmm.model.state_dict().items()}
    start = every_head_left_alone(lmm)
    refined, log = refine(lmm, start, train, task, config=_steps(40, 0.5), batch=8, progress=False)
    assert log.before < 0.5 and log.after > 0.99 and log.kept_step > 0  # every held-out query says "yes"
    assert refined.shifts is not None and bool(refined.shifts.abs().sum() > 0)
    assert bool(torch.isnan(refined.vectors).all())  # still own output + correction: nothing replaced
    fresh = _judge(lmm, refined, refined.shifts, answer_queries(lmm, train[:64], task, "first_token"))
    assert fresh > 0.9  # the artifact as returned scores what the log says, on queries of the same task
    for k, v in lmm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert all(p.grad is None for p in lmm.model.parameters())


def test_the_answer_objective_reaches_later_tokens_through_the_prompts_last_token_only(lmm_of):
    """Whole-answer refinement teacher-forces the answer as generate would: the correction is
    added at the prompt's last token only, so later answer tokens feel it only through the
    keys and values that position passes on. In a two-layer model that is layer 0's heads:
    the last layer's output there reaches no later token. Were the correction added at every
    teacher-forced pass (each pass's last position), layer 1 would get a gradient from them."""
    from stv.methods.refine import _logits, answer_loss

    lmm = lmm_of("llama")
    train = constant_answer_examples(8, "yes no yes")
    task = task_for(train)
    locations = torch.tensor([(0, 1), (1, 2)])
    nan = torch.full((2, lmm.heads.head_dim), float("nan"))  # (K, D): own output + correction
    vectors = TaskVectors(locations, nan, config=TaskVectorsConfig(policy="prompt_last"))
    queries = answer_queries(lmm, train, task, "answer")
    assert queries.valid is not None and queries.target.shape[1] > 2  # the answer line is several tokens
    later_only = replace(queries, valid=queries.valid.clone())
    later_only.valid[:, 0] = False  # the first answer token's loss left out
    grads = {}
    for name, q in (("all", queries), ("later", later_only)):
        u = torch.zeros(2, lmm.heads.head_dim, requires_grad=True)  # (K, D)
        with torch.enable_grad():
            (grads[name],) = torch.autograd.grad(answer_loss(_logits(lmm, vectors, u, q), q), [u])
    assert bool(grads["later"][0].abs().sum() > 0)  # layer 0: reaches later tokens through its keys/values
    assert bool(grads["later"][1].abs().sum() == 0)  # layer 1: only the first token's logits
    assert bool(grads["all"][1].abs().sum() > 0)
    held = constant_answer_examples(12, "yes no yes")[8:]
    rng = np.random.default_rng(0)
    whole, log = refine(
        lmm, vectors, train, task, config=_steps(20, 0.5, "answer"), rng=rng, batch=4, progress=False, held_out=held
    )
    assert log.kept_step > 0 and log.after > log.before  # the whole answer's log-prob rose on held-out queries
    assert whole.shifts is not None
    judged = _judge(lmm, whole, whole.shifts, answer_queries(lmm, held, task, "answer"))
    assert abs(judged - log.after) < 1e-6  # the artifact as returned is what was judged


def answered_as_the_model_does(lmm, task, queries: list[Example]) -> list[Example]:
    """``queries`` with the answer the untouched model already gives first (where that answer,
    decoded, tokenizes back to the same first token)."""
    top = lmm.forward([task.prompt([], q) for q in queries]).argmax(-1)
    out = [replace(q, answers=[lmm.tokenizer.decode([int(t)]).strip()]) for q, t in zip(queries, top)]
    agree = first_token_ids(lmm, out, task) == top
    return [e for e, ok in zip(out, agree.tolist()) if ok and e.answer]


def test_a_correction_that_does_not_help_is_not_kept(lmm_of):
    """Trained to say "yes", judged on queries the untouched model already answers as they
    should be: every correction scores worse on them than none, so the artifact comes back
    unchanged."""
    lmm = lmm_of("llama")
    train = constant_answer_examples(40, "yes")
    task = task_for(train)
    held = answered_as_the_model_does(lmm, task, constant_answer_examples(240)[40:])
    assert len(held) >= 4
    start = every_head_left_alone(lmm)
    same, log = refine(lmm, start, train, task, config=_steps(0, 0.1), progress=False)
    assert same is start and log.kept_step == 0
    kept, log = refine(lmm, start, train, task, config=_steps(20, 0.5), progress=False, held_out=held)
    assert log.kept_step == 0 and log.after == log.before and kept is start
    learned, log = refine(lmm, start, train, task, config=_steps(20, 0.5), progress=False, held_out=train)
    assert log.kept_step > 0 and learned is not start  # the same run, judged on its own task, is kept


@pytest.mark.parametrize("where", ["written", "every"])
def test_fit_refines_at_the_written_heads_or_at_every_location(lmm_of, where):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    cfg = STVConfig.plus(top_k=4, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6, restarts=1)
    cfg = replace(cfg, continuation_search=0, schedule_items=0, refine=3, refine_heads=where, refine_start="search")
    vectors = fit(lmm, train, cfg, task=task, progress=False)
    state = vectors.log
    unrefined = fit(lmm, train, replace(cfg, refine=0), task=task, progress=False)
    assert "refine" in vectors.config.extra and "refine" in state.timings
    if where == "every":
        assert vectors.location_list() == [tuple(loc) for loc in state.locations]
    else:
        assert vectors.location_list() == unrefined.location_list()
    written = ~torch.isnan(unrefined.vectors).any(-1)
    mine = {loc: i for i, loc in enumerate(vectors.location_list())}
    for i, loc in enumerate(unrefined.location_list()):  # the chosen values stay; only the shifts move
        if written[i]:
            torch.testing.assert_close(vectors.vectors[mine[loc]], unrefined.vectors[i])


def test_refine_settings_are_checked():
    with pytest.raises(StvError, match="refine"):
        STVConfig.plus(refine=-1).check()
    with pytest.raises(StvError, match="refine_heads"):
        STVConfig.plus(refine=5, refine_heads="some").check()
    with pytest.raises(StvError, match="refine_start"):
        STVConfig.plus(refine=5, refine_start="middle").check()
    with pytest.raises(StvError, match="steer_margin"):
        STVConfig.plus(refine=5, steer_margin=-1).check()
    with pytest.raises(StvError, match="unreplace"):
        STVConfig.plus(refine_start="search", unreplace=True).check()
    STVConfig.plus(unreplace=True).check()  # stv+ judges its starts on held-out queries


def test_a_steer_margin_keeps_the_other_starts_unless_steering_answers_enough_more():
    n = 64  # held-out queries; a score is hits / n plus a tie-break far below 1 / n
    judged = {"search": 30 / n - 0.003, "zero": 30 / n - 0.001, "steer": 32 / n - 0.004}
    assert _best_start(judged, 0, n) == "steer"  # the highest score
    assert _best_start(judged, 2, n) == "steer"  # two queries more than zero's
    assert _best_start(judged, 3, n) == "zero"  # else the best of the others, tie-break included
    tie = {"search": 31 / n - 0.002, "zero": 31 / n - 0.003, "steer": 31 / n - 0.001}
    assert _best_start(tie, 0, n) == "steer" and _best_start(tie, 1, n) == "search"
    no_steer = {"search": 30 / n, "zero": 33 / n}  # the margin is about steering only
    assert _best_start(no_steer, 5, n) == "zero"


def test_both_starts_keep_the_better_one_on_the_same_held_out_queries(lmm_of):
    """``refine_start="both"``: the searched vectors and "write nothing" are each refined and
    judged on the same held-out queries; a search result that says the answer is kept over a
    zero start that cannot learn in time, and one that steers away from it loses to zero."""
    lmm = lmm_of("llama")
    train = constant_answer_examples(80, "yes")
    task = task_for(train)
    every = lmm.heads.all_locations()
    nothing = every_head_left_alone(lmm)
    good, log = refine(lmm, nothing, train, task, config=_steps(20, 0.5), progress=False)
    assert log.after > log.before + 0.5  # the constant answer is learnable from zero
    assert good.shifts is not None
    cfg = replace(STVConfig.plus(), refine=2, refine_lr=1e-6, refine_heads="every", refine_start="both")
    for searched, start in ((good, "search"), (replace(good, shifts=-4 * good.shifts), "zero")):
        searched.config = TaskVectorsConfig(policy="prompt_last").with_(arms={"centroid": 3, "keep": 1})
        kept = refined(lmm, searched, train, task, cfg, every, np.random.default_rng(1), progress=False)
        assert kept.config.extra["refine"]["start"] == start
        if start == "zero":  # nothing of the search is written, and the arms say so
            assert torch.isnan(kept.vectors).all() and kept.config.extra["arms"] == {"centroid": 0, "keep": len(every)}
            assert kept.shifts is None or kept.shifts.abs().max() < 1e-3
        else:
            torch.testing.assert_close(kept.shifts, good.shifts, atol=1e-3, rtol=0)


def test_refine_start_zero_drops_the_search(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    cfg = STVConfig.plus(top_k=4, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6, restarts=1)
    cfg = replace(cfg, continuation_search=0, schedule_items=0, refine=3, refine_start="zero")
    vectors = fit(lmm, train, cfg, task=task, progress=False)
    state = vectors.log
    assert vectors.location_list() == [tuple(loc) for loc in state.locations]
    assert torch.isnan(vectors.vectors).all() and vectors.config.extra["refine"]["start"] == "zero"


@pytest.mark.parametrize("apart", [True, False])
def test_judge_apart_keeps_the_judges_queries_from_the_search(lmm_of, monkeypatch, apart):
    """With ``judge_apart`` the queries refinement is judged on reach neither REINFORCE's
    rewards nor the final selection; without it, they are drawn from the same training set."""
    import stv.methods.fit as fit_module
    import stv.methods.refine as refine_module

    seen: dict[str, set[str]] = {"search": set(), "judge": set()}

    def spy(name, real, position):
        def wrapped(*args, **kwargs):
            queries = kwargs["held_out"] if name == "judge" else args[position]
            seen[name].update(q.id for q in queries)
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(fit_module, "bank_rewards", spy("search", fit_module.bank_rewards, 1))
    monkeypatch.setattr(fit_module, "select_best", spy("search", fit_module.select_best, 1))
    monkeypatch.setattr(refine_module, "refine", spy("judge", refine_module.refine, 2))
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    cfg = STVConfig.plus(top_k=4, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6, restarts=1)
    cfg = replace(cfg, continuation_search=0, schedule_items=0, refine=2, final_recheck=8, judge_apart=apart)
    vectors = fit(lmm, train, cfg, task=task_for(train), progress=False)
    assert len(seen["judge"]) == 20 and vectors.config.extra["refine"]["start"] in ("search", "zero")
    assert seen["search"] == ({q.id for q in train} - seen["judge"] if apart else {q.id for q in train})


def test_steering_writes_the_searched_value_on_the_prompts_it_was_centred_on(lmm_of):
    """The steer start moves each written head by (value - its mean own output): on the very
    prompt the mean was taken over it writes what replacement writes, on another it does not."""
    lmm = lmm_of("llama")
    train = constant_answer_examples(8)
    task = task_for(train)
    locations = [(0, 0), (1, 1), (1, 0)]
    values = torch.randn(len(locations), lmm.heads.head_dim)  # (K, D)
    values[2] = float("nan")  # a head the search leaves alone stays alone
    config = TaskVectorsConfig(policy="prompt_last", model=lmm.name, weights=lmm.weights_fingerprint())
    replaced = TaskVectors(torch.tensor(locations), values, config=config)
    as_steering = steered(lmm, replaced, task, [train[0]] * 3)
    assert torch.isnan(as_steering.vectors).all() and as_steering.shifts is not None and not as_steering.shifts[2].any()

    def logits(vectors: TaskVectors, example: Example) -> torch.Tensor:
        with vectors.apply(lmm):
            return lmm.forward([task.prompt([], example)])

    torch.testing.assert_close(logits(as_steering, train[0]), logits(replaced, train[0]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(as_steering, train[1]), logits(replaced, train[1]), atol=1e-4)


def test_all_starts_add_steering_and_leave_the_other_starts_as_both_draws_them(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    every = lmm.heads.all_locations()
    searched = TaskVectors(
        torch.tensor(every[:2]), torch.randn(2, lmm.heads.head_dim), config=TaskVectorsConfig(policy="prompt_last")
    )
    base = replace(STVConfig.plus(), refine=2, refine_heads="every")
    judged, after = {}, {}
    for start in ("both", "all"):
        rng = np.random.default_rng(3)
        judged[start] = refined(
            lmm, searched, train, task, replace(base, refine_start=start), every, rng, False
        ).config.extra["refine"]["judged"]
        after[start] = rng.integers(1 << 30, size=4).tolist()  # what the fit draws next
    assert set(judged["all"]) == {"search", "zero", "steer"}
    assert {k: judged["all"][k] for k in ("search", "zero")} == judged["both"]
    assert after["all"] == after["both"]  # steering draws from its own generator
    # a steer margin changes which start is kept (tested above), never what the starts draw
    strict = replace(base, refine_start="all", steer_margin=65)
    kept = refined(lmm, searched, train, task, strict, every, np.random.default_rng(3), False).config.extra["refine"]
    assert kept["judged"] == judged["all"] and kept["start"] != "steer"


def test_unreplace_turns_a_replaced_head_into_steering_only_where_held_out_queries_gain(lmm_of):
    """Held-out targets that steering answers and replacement does not: the replaced head is
    turned (its vector dropped, steering's shift written); targets replacement answers: the
    artifact comes back as it was."""
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:24]
    task = task_for(train)
    every = lmm.heads.all_locations()
    values = torch.full((len(every), lmm.heads.head_dim), float("nan"))  # (K, D): every head left alone ...
    values[-1] = 0.0  # ... but the last, zeroed: what it said about the query is erased
    replaced = TaskVectors(torch.tensor(every), values, config=TaskVectorsConfig(policy="prompt_last"))
    steering = steered(lmm, replaced, task, train[:8])
    prompts = [task.prompt([], q) for q in train[8:]]

    def top_tokens(vectors: TaskVectors) -> torch.Tensor:
        with vectors.apply(lmm):
            return lmm.forward(prompts).argmax(-1)  # (B,)

    assert not torch.equal(top_tokens(steering), top_tokens(replaced))  # the two writes answer differently
    inputs = lmm.prepare(prompts)
    turned, count = unreplaced(lmm, replaced, task, train[:8], _Queries(inputs, top_tokens(steering)))
    assert count == 1 and torch.isnan(turned.vectors).all() and turned.shifts is not None
    torch.testing.assert_close(turned.shifts, steering.shifts)  # own output - its mean: the query survives
    kept, count = unreplaced(lmm, replaced, task, train[:8], _Queries(inputs, top_tokens(replaced)))
    assert count == 0 and kept is replaced

"""STVConfig: the default K, and errors that name the setting and the fix."""

import pytest

from stv.config import STVConfig, default_top_k
from stv.errors import StvError
from stv.methods.fit import fit

from .conftest import text_examples


def test_config_errors_are_clear(lmm_of):
    lmm = lmm_of("llama")
    train = text_examples(6)
    with pytest.raises(
        ValueError, match=r"top_k=99 must be between 0 \(chosen from the model\) and the model's 8 heads"
    ):
        fit(lmm, train, STVConfig.paper(top_k=99), progress=False)
    with pytest.raises(ValueError, match="shots=8 needs more than 8 training examples, got 6"):
        fit(lmm, train, STVConfig.paper(top_k=2, shots=8), progress=False)
    with pytest.raises(ValueError, match="queries_per_step=7"):
        fit(lmm, train, STVConfig.paper(top_k=2, shots=2, queries_per_step=7), progress=False)
    with pytest.raises(StvError, match="final_objective='accuracy' must be one of log_prob, hits, margin"):
        STVConfig.paper(final_objective="accuracy").check()  # type: ignore[arg-type]
    with pytest.raises(StvError, match="final_keep needs keep_arm"):
        STVConfig.plus(keep_arm=False).check()


def test_default_k_follows_the_keep_arm():

    assert [default_top_k(h, keep_arm=True) for h in (16, 72, 270)] == [16, 72, 270]
    assert [default_top_k(h, keep_arm=False) for h in (16, 72, 270, 1024)] == [8, 18, 64, 64]


@pytest.mark.slow
def test_top_k_zero_resolves_per_preset(lmm_of):
    lmm = lmm_of("llama")
    heads = lmm.heads.num_layers * lmm.heads.num_heads
    assert STVConfig.plus().top_k == 0 and STVConfig.plus().resolved(lmm).top_k == heads  # every head
    assert STVConfig.paper(top_k=0).resolved(lmm).top_k == default_top_k(heads, keep_arm=False)
    assert STVConfig.paper(top_k=3).resolved(lmm).top_k == 3  # a given K stays
    with pytest.raises(StvError, match="top_k=-1 must be >= 0"):
        STVConfig.paper(top_k=-1).check()
    vectors = fit(
        lmm, text_examples(12), STVConfig.plus(clusters=2, pairs=4, shots=2, steps=1, samples=2), progress=False
    )
    log = vectors.log
    assert len(log.locations) == heads and vectors.config.hyperparameters["top_k"] == heads  # recorded resolved

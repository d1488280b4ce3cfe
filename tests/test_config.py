"""STVConfig: the default K, and errors that name the setting and the fix."""

import pytest

from stv.config import STVConfig, default_top_k
from stv.methods.fit import fit

from .conftest import text_examples


def test_config_errors_are_clear(lmm_of):
    lmm = lmm_of("llama")
    train = text_examples(6)
    with pytest.raises(ValueError, match="top_k=99 must be between 1 and the model's 8 heads"):
        fit(lmm, train, STVConfig(top_k=99), progress=False)
    with pytest.raises(ValueError, match="shots=8 needs more than 8 training examples, got 6"):
        fit(lmm, train, STVConfig(top_k=2, shots=8), progress=False)
    with pytest.raises(ValueError, match="queries_per_step=7"):
        fit(lmm, train, STVConfig(top_k=2, shots=2, queries_per_step=7), progress=False)


def test_default_k_follows_the_keep_arm():

    assert [default_top_k(h, keep_arm=True) for h in (16, 72, 270)] == [16, 64, 64]
    assert [default_top_k(h, keep_arm=False) for h in (16, 72, 270, 1024)] == [8, 18, 64, 64]

import math

import pytest
import torch
from conftest import tiny_model

from prunekit.data.windows import TokenWindows
from prunekit.evaluation.perplexity import perplexity


def test_perplexity_is_exp_of_the_models_own_mean_loss(ids):
    model = tiny_model("llama")
    result = perplexity(model, TokenWindows(ids, "test", ids.numel()), batch_size=2, progress=False)
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()  # same token count per window, so the means agree
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-4)
    assert result.predicted_tokens == ids.shape[0] * (ids.shape[1] - 1)
    assert result.tokens_per_second > 0 and result.windows == 3


def test_offloaded_block_by_block_perplexity_matches_the_plain_forward(ids):
    model = tiny_model("gemma3_text")
    windows = TokenWindows(ids, "test", ids.numel())
    plain = perplexity(model, windows, progress=False)
    offloaded = perplexity(model, windows, offload=True, batch_size=2, progress=False)
    assert offloaded.perplexity == pytest.approx(plain.perplexity, rel=1e-5)
    assert offloaded.predicted_tokens == plain.predicted_tokens

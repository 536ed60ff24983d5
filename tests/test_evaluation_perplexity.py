import math

import pytest
import torch

from prunekit.data.windows import TokenWindows
from prunekit.evaluation.perplexity import perplexity

from conftest import tiny_model


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


def test_rolling_loglikelihood_equals_lm_eval(tiny_tokenizer):
    """Same windows, same prefix token, same total as lm-eval's loglikelihood_rolling."""
    lm_eval = pytest.importorskip("lm_eval")
    from pydoc_data.topics import topics

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from prunekit.evaluation.perplexity import rolling_loglikelihood

    model = tiny_model("llama")
    text = topics["assert"][:1500]
    ours = rolling_loglikelihood(model, tiny_tokenizer, text, max_len=32)
    lm = HFLM(pretrained=model, tokenizer=tiny_tokenizer, max_length=32, batch_size=1, device="cpu")
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]
    assert ours.tokens > 3 * 32  # several windows, including a partial last one
    assert -ours.nll == pytest.approx(theirs, rel=1e-5)
    assert lm_eval.__version__

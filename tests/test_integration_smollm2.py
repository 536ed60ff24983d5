"""On the embedded SmolLM2-135M (a real 30-block Llama): load from GGUF, prune, export, reload."""

import pytest
import torch
import transformers

from prunekit import load_model, load_windows, prune, save_model
from prunekit.models.loading import embedded_model_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    try:
        embedded_model_path()
    except Exception as error:  # the package is installed by `make test`; say so if it is not
        pytest.skip(str(error))
    return load_model("smollm2-135m", device="cpu")


def test_gguf_alias_loads_a_30_block_llama_that_predicts_text(smollm2):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    assert model.config.model_type == "llama" and smollm2.adapter.num_blocks == 30
    assert not hasattr(model.config, "quantization_config")
    prompt = tokenizer("The capital of France is", return_tensors="pt").input_ids
    answer = tokenizer.decode(model.generate(prompt, max_new_tokens=3, do_sample=False)[0, prompt.shape[1]:])
    assert "Paris" in answer


def test_pruned_embedded_model_exports_and_reloads_identically(smollm2, tmp_path):
    windows = load_windows("builtin", smollm2.tokenizer, purpose="calibration", num_windows=2, seq_len=64)
    pruned, plan = prune(smollm2.model, windows, method="shortgpt", remove=3, progress=False)
    assert smollm2.adapter.num_blocks == 30 and len(plan.removed_blocks) == 3
    assert 0 not in plan.removed_blocks and 29 not in plan.removed_blocks  # the ends matter most
    out = save_model(pruned, smollm2.tokenizer, tmp_path / "pruned")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = windows.input_ids[:1, :32]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=0, atol=0)
    kwargs = dict(max_new_tokens=10, do_sample=False)
    assert torch.equal(reloaded.generate(ids, use_cache=True, **kwargs), reloaded.generate(ids, use_cache=False, **kwargs))

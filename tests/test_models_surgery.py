import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter
from prunekit.models.surgery import remove_blocks

from conftest import FAMILIES, tiny_model, zero_block


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_an_identity_block_leaves_logits_unchanged(family, ids):
    model = tiny_model(family)
    zero_block(model, 2)
    with torch.no_grad():
        before = model(ids).logits
    kept = remove_blocks(model, [2])
    with torch.no_grad():
        after = model(ids).logits
    assert kept == [0, 1, 3]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_and_layer_indices_follow_the_kept_blocks(family):
    model = tiny_model(family)
    types_before = list(getattr(model.config, "layer_types", None) or [])
    remove_blocks(model, [0, 2])
    adapter = ModelAdapter(model)
    assert model.config.num_hidden_layers == adapter.num_blocks == 2
    if types_before:
        assert model.config.layer_types == [types_before[1], types_before[3]]
    for position, layer in enumerate(adapter.layers):
        indices = {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")}
        assert indices == {position}


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_and_uncached_greedy_generation_agree_after_removal(family, ids):
    model = tiny_model(family)
    remove_blocks(model, [1])
    prompt = ids[:1, :6]
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize(
    "indices, message", [([], "at least one"), ([4], "out of range"), ([-1], "out of range"), ([0, 1, 2, 3], "at least one must remain")]
)
def test_impossible_removals_are_refused(indices, message):
    model = tiny_model("llama")
    with pytest.raises(PrunekitError, match=message):
        remove_blocks(model, indices)
    assert ModelAdapter(model).num_blocks == 4

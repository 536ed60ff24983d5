import pytest
import torch
import transformers

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter, parameter_count, supported_model_types

from conftest import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_blocks_norm_and_head(family):
    model = tiny_model(family)
    adapter = ModelAdapter(model)
    assert adapter.num_blocks == 4
    assert adapter.final_norm is model.model.norm
    assert adapter.lm_head is model.lm_head
    assert not any(m is adapter.layers for m in adapter.non_block_modules())


def test_unsupported_architecture_names_the_supported_ones():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(PrunekitError, match="unsupported architecture 'gpt2'.*llama") as error:
        ModelAdapter(model)
    assert "\n" not in str(error.value)
    assert set(FAMILIES) <= set(supported_model_types())


def test_tied_embeddings_are_counted_once():
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, tie_word_embeddings=True
    )
    model = transformers.LlamaForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert parameter_count(model) == sum(p.numel() for p in model.parameters())
    assert parameter_count(model) < sum(p.numel() for p in model.state_dict().values())


@pytest.mark.parametrize("family", [*FAMILIES, "bert"])
def test_every_family_keeps_the_block_adapter_contract(family, ids):
    """Decoders and encoders answer the same questions, and the answers fit the model's real shapes."""
    from prunekit.models.encoders import adapter_for

    from conftest import tiny_bert

    model = tiny_bert() if family == "bert" else tiny_model(family)
    adapter = adapter_for(model)
    assert adapter.num_blocks == model.config.num_hidden_layers
    seen = {id(p) for m in adapter.non_block_modules() for p in m.parameters()}
    outside = sum(p.numel() for m in adapter.non_block_modules() for p in m.parameters() if id(p) in seen and not seen.discard(id(p)))
    assert outside + sum(adapter.block_parameter_count(i) for i in range(adapter.num_blocks)) == parameter_count(model)
    captured = {}
    hooks = []
    for i in range(adapter.num_blocks):
        assert adapter.num_heads(i) == model.config.num_attention_heads
        assert adapter.attention_output(i).in_features == adapter.num_heads(i) * adapter.head_size(i)
        channels = adapter.mlp_output(i).in_features
        assert sum(p.out_features for p in adapter.mlp_inputs(i)) in (channels, 2 * channels)  # plain, gated or fused gate+up
        assert all(p.in_features == model.config.hidden_size for p in adapter.attention_inputs(i) + adapter.mlp_inputs(i))
        for name, module in (("attention", adapter.attention_output(i)), ("mlp", adapter.mlp_output(i))):
            hooks.append(module.register_forward_pre_hook(lambda m, args, key=(name, i): captured.__setitem__(key, args[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=ids.clamp(max=model.config.vocab_size - 1))
    for hook in hooks:
        hook.remove()
    for i in range(adapter.num_blocks):  # the consumers really are what the forward pass feeds the heads and channels into
        assert captured[("attention", i)] == adapter.attention_output(i).in_features
        assert captured[("mlp", i)] == adapter.mlp_output(i).in_features

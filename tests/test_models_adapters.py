import pytest
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

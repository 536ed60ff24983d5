"""The DeciLM checkpoint computes what the pruned model computes, read by the rules vLLM's `nemotron_nas.py` reads it
with (every layer `num_attention_heads` query heads, `num_attention_heads // n_heads_in_group` KV heads, the FFN's
`intermediate_size` as written, no-op sublayers skipped, o_proj bias alone under `qkv_bias: false`).

The reader below is built from transformers' own Llama attention and MLP, one per layer from the block configs;
it checks the format's arithmetic (padding, biases, names), not vLLM itself, which these tests do not run.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding

import prunekit
from prunekit.errors import PrunekitError
from prunekit.export.decilm import CONFIG_MODULE, export_decilm
from prunekit.models.adapters import ModelAdapter
from prunekit.models.width_surgery import slice_attention
from test_export_gguf import empty_sublayers

from conftest import VOCAB, tiny_config, tiny_model


def windows():
    ids = torch.randint(3, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))
    return prunekit.TokenWindows(ids, "random", ids.numel())


def narrow_heads(model, layer: int, groups: list[int]):
    """Keep only the KV groups `groups` of one layer (with their query heads), as head pruning does."""
    adapter = ModelAdapter(model)
    attention = adapter.layers[layer].self_attn
    head_dim, per_group = attention.head_dim, model.config.num_attention_heads // model.config.num_key_value_heads
    q_rows = torch.cat([torch.arange(g * per_group * head_dim, (g + 1) * per_group * head_dim) for g in groups])
    kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
    new_o = attention.o_proj.weight.detach()[:, q_rows].clone()
    slice_attention(attention, adapter.family, q_rows, kv_rows, new_o, None, False)
    return model


def structure(name):
    if name == "a zero group added":  # 4 heads in 4 groups, 3 kept: 4 has no group size for 3, so a fourth is zero
        config = tiny_config("llama")
        config.num_key_value_heads = 4
        torch.manual_seed(0)
        return narrow_heads(transformers.AutoModelForCausalLM.from_config(config).eval(), 1, [0, 2, 3])
    model = tiny_model("llama", num_layers=4)
    if name == "narrowed heads":
        return narrow_heads(narrow_heads(model, 1, [1]), 2, [0])
    if name == "adaptive widths":
        return prunekit.prune(model, "liar", windows(), ratio=0.3, allocation="adaptive", progress=False).model
    if name == "depth + width recipe":
        recipe = [{"method": "shortgpt", "remove": 1}, {"method": "liar", "ratio": 0.3, "allocation": "adaptive"}]
        return prunekit.prune(model, recipe, windows(), progress=False).model
    if name == "empty sublayers":
        return empty_sublayers(prunekit.prune(model, "liar", windows(), ratio=0.2, allocation="adaptive", progress=False).model)
    raise AssertionError(name)


class VllmRules(torch.nn.Module):
    """A DeciLM checkpoint read as vLLM's reader reads it."""

    def __init__(self, directory):
        super().__init__()
        saved = json.loads((directory / "config.json").read_text())
        base = {k: v for k, v in saved.items() if k not in ("block_configs", "model_type", "architectures", "auto_map")}
        self.config = LlamaConfig(**base)
        self.config._attn_implementation = "sdpa"
        heads, hidden = self.config.num_attention_heads, self.config.hidden_size
        self.embed = torch.nn.Embedding(self.config.vocab_size, hidden)
        self.rotary = LlamaRotaryEmbedding(self.config)
        self.layers = torch.nn.ModuleList()
        for index, block in enumerate(saved["block_configs"]):
            layer = torch.nn.Module()
            if not block["attention"]["no_op"]:
                kv = heads // block["attention"]["n_heads_in_group"]
                own = copy.copy(self.config)
                own.num_key_value_heads, own.attention_bias = kv, saved["attention_bias"]
                layer.self_attn = LlamaAttention(own, index)
                layer.input_layernorm = LlamaRMSNorm(hidden, self.config.rms_norm_eps)
            if not block["ffn"]["no_op"]:
                own = copy.copy(self.config)
                own.intermediate_size, own.mlp_bias = block["ffn"]["intermediate_size"], saved["mlp_bias"]
                layer.mlp = LlamaMLP(own)
                layer.post_attention_layernorm = LlamaRMSNorm(hidden, self.config.rms_norm_eps)
            self.layers.append(layer)
        self.norm = LlamaRMSNorm(hidden, self.config.rms_norm_eps)
        self.lm_head = torch.nn.Linear(hidden, self.config.vocab_size, bias=False)
        state = {
            k.replace("model.embed_tokens.", "embed.").replace("model.", ""): v
            for k, v in load_file(directory / "model.safetensors").items()
        }
        if saved["attention_bias"]:  # qkv_bias false: the q/k/v biases vLLM does not create are zero here
            for name, module in self.named_modules():
                if isinstance(module, LlamaAttention):
                    for proj in ("q_proj", "k_proj", "v_proj"):
                        state[f"{name}.{proj}.bias"] = torch.zeros_like(getattr(module, proj).bias)
        if "lm_head.weight" not in state:
            state["lm_head.weight"] = state["embed.weight"]
        missing, unexpected = self.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (missing, unexpected)

    def forward(self, ids):
        hidden = self.embed(ids)
        position = self.rotary(hidden, torch.arange(ids.shape[1])[None])
        for layer in self.layers:
            if hasattr(layer, "self_attn"):
                hidden = hidden + layer.self_attn(layer.input_layernorm(hidden), position, None)[0]
            if hasattr(layer, "mlp"):
                hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.lm_head(self.norm(hidden))


@pytest.mark.parametrize("name", ["adaptive widths", "depth + width recipe", "empty sublayers", "narrowed heads", "a zero group added"])
def test_a_decilm_checkpoint_read_by_vllms_rules_computes_the_pruned_model(name, tiny_tokenizer, tmp_path):
    model = structure(name)
    exported = export_decilm(model, tiny_tokenizer, tmp_path / "deci")
    if name == "narrowed heads":  # one group of two heads padded to the four a layer has
        assert [(w.groups, w.group_size) for w in exported.layers][1:3] == [(1, 4), (1, 4)] and exported.padded_heads == 4
    if name == "a zero group added":
        assert (exported.layers[1].groups, exported.layers[1].kept_groups, exported.padded_heads) == (4, 3, 1)
    config = json.loads((tmp_path / "deci" / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"] and config["model_type"] == "nemotron-nas"
    assert (tmp_path / "deci" / CONFIG_MODULE).is_file() and len(config["block_configs"]) == len(exported.layers)
    reader = VllmRules(tmp_path / "deci").eval()
    ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reader(ids), model(ids).logits, atol=2e-5, rtol=1e-5)


def test_its_configuration_module_reads_the_blocks_as_attributes(tiny_tokenizer, tmp_path):
    from transformers import AutoConfig

    export_decilm(structure("empty sublayers"), tiny_tokenizer, tmp_path / "deci")
    config = AutoConfig.from_pretrained(tmp_path / "deci", trust_remote_code=True)
    blocks = config.block_configs
    assert config.model_type == "nemotron-nas" and any(b.attention.no_op is False for b in blocks)
    assert all(isinstance(b.ffn.no_op, bool) and (b.ffn.no_op or b.ffn.intermediate_size > 0) for b in blocks)
    assert config.to_dict()["block_configs"][0]["attention"].keys() >= {"no_op", "n_heads_in_group", "replace_with_linear"}


def test_a_uniform_model_stays_a_plain_checkpoint_and_other_families_are_refused(tiny_tokenizer, tmp_path):
    uniform = prunekit.prune(tiny_model("llama"), "liar", windows(), ffn_ratio=0.25, progress=False).model
    exported = export_decilm(uniform, tiny_tokenizer, tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "llama" and "plain checkpoint" in exported.notes[0]
    with pytest.raises(PrunekitError, match="has no form in it"):
        export_decilm(tiny_model("qwen3"), tiny_tokenizer, tmp_path / "q")


def test_the_export_command_writes_a_decilm_directory_and_refuses_bad_input(tiny_tokenizer, tmp_path, capsys):
    from prunekit.cli import main

    model = structure("adaptive widths")
    prunekit.save(model, tmp_path / "pruned", tiny_tokenizer)
    assert main(["export", "--model", str(tmp_path / "pruned"), "--to", "vllm", "--out", str(tmp_path / "vllm"), "--quiet"]) == 0
    assert "DeciLM (nemotron-nas) checkpoint for vLLM written to" in capsys.readouterr().out
    assert json.loads((tmp_path / "vllm" / "config.json").read_text())["architectures"] == ["DeciLMForCausalLM"]
    for out in (tmp_path / "vllm", tmp_path / "pruned" / "inside"):
        assert main(["export", "--model", str(tmp_path / "pruned"), "--to", "vllm", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not empty" in err or "inside the input" in err)


def test_prune_writes_the_vllm_checkpoint_beside_its_own(tiny_checkpoint, tmp_path, capsys):
    from prunekit.cli import main

    argv = ["prune", "--model", tiny_checkpoint, "--method", "liar", "--ratio", "0.3", "--allocation", "adaptive", "--windows", "4",
            "--seq-len", "32", "--out", tmp_path / "pruned", "--vllm", tmp_path / "vllm", "--quiet"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "vllm" / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and len(config["block_configs"]) == 4
    assert (tmp_path / "pruned" / "model.safetensors").is_file() and "for vLLM written to" in capsys.readouterr().out

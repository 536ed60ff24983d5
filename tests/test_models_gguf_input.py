"""A GGUF file read back as a transformers model computes what the exported model computed: the biases LIAR's
compensation adds are loaded (transformers' reader alone skips them), and a bias the family cannot hold is refused."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.export.gguf_writer import export_gguf
from prunekit.models import gguf_input
from prunekit.models.loading import load_model

from conftest import VOCAB, tiny_model


def windows():
    ids = torch.randint(3, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))
    return prunekit.TokenWindows(ids, "random", ids.numel())


@pytest.mark.parametrize("options", [{"ffn_ratio": 0.3}, {"ffn_ratio": 0.3, "head_ratio": 0.5}], ids=["ffn", "ffn and heads"])
def test_a_liar_model_read_back_from_gguf_keeps_its_compensation_biases(tmp_path, tiny_tokenizer, monkeypatch, options):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model = prunekit.prune(tiny_model("llama"), "liar", windows(), progress=False, **options).model
    down_bias = model.model.layers[0].mlp.down_proj.bias
    assert down_bias is not None and down_bias.abs().max() > 0
    exported = export_gguf(model, tiny_tokenizer, tmp_path / "width.gguf", gguf_type="f32")
    assert "ffn_down" in gguf_input.read_header(exported.path).bias_parts
    loaded = load_model(str(exported.path), device="cpu", progress=False)
    assert loaded.model.config.mlp_bias
    assert not loaded.model.model.layers[0].mlp.gate_proj.bias.any() and not loaded.model.model.layers[0].mlp.up_proj.bias.any()
    ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)


def test_a_bias_the_family_has_no_place_for_is_refused(monkeypatch):
    header = gguf_input.GgufHeader
    with pytest.raises(PrunekitError, match=r"holds ffn_down biases that transformers' qwen3 has no place for"):
        gguf_input.bias_switches(header("qwen3", frozenset({"ffn_down"})), "m.gguf")
    assert gguf_input.bias_switches(header("llama", frozenset({"ffn_down"})), "m.gguf") == {"mlp_bias": True}
    qkv = frozenset({"attn_q", "attn_k", "attn_v"})
    assert gguf_input.bias_switches(header("qwen2", qkv), "m.gguf") == {}  # loaded natively


def test_the_architecture_is_read_from_the_header(tmp_path, tiny_tokenizer):
    exported = export_gguf(tiny_model("qwen3"), tiny_tokenizer, tmp_path / "q.gguf", gguf_type="f32")
    assert gguf_input.read_header(exported.path).model_type == "qwen3"
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(PrunekitError, match="cannot read GGUF file"):
        gguf_input.read_header(tmp_path / "junk.gguf")

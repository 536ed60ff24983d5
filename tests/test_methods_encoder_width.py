import pytest
import torch
import transformers

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.methods.liar.encoder import prune_encoder_width
from prunekit.models.encoders import load_encoder, save_encoder, sentence_embeddings

from conftest import BERT_VOCAB, tiny_bert


@pytest.fixture(scope="module")
def windows():
    ids = torch.randint(5, BERT_VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    return TokenWindows(ids, "random", ids.numel())


def embeddings_error(model, reference, ids):
    with torch.no_grad():
        return (model(ids).last_hidden_state - reference).pow(2).mean().item()


def test_encoder_reconstruction_order_on_block_outputs(windows):
    dense = tiny_bert()
    ids = windows.input_ids
    with torch.no_grad():
        reference = dense(ids).last_hidden_state
    errors = {}
    for reconstruction in ("none", "bias", "liar"):
        model = tiny_bert()
        plan = prune_encoder_width(model, windows, head_ratio=0.5, ffn_ratio=0.5, reconstruction=reconstruction, progress=False)
        errors[reconstruction] = embeddings_error(model, reference, ids)
        assert plan["heads_after"] == 2 and plan["intermediate_size_after"] == 64
    assert errors["liar"] < errors["none"] and errors["bias"] < errors["none"]


def test_pruned_encoder_reloads_exactly_and_keeps_sentence_transformers_files(windows, tmp_path, bert_tokenizer):
    source = tmp_path / "source"
    dense = tiny_bert()
    dense.save_pretrained(source)
    (source / "modules.json").write_text("[]")
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text("{}")
    model = tiny_bert()
    prune_encoder_width(model, windows, head_ratio=0.25, ffn_ratio=0.25, progress=False)
    out = save_encoder(model, bert_tokenizer, tmp_path / "pruned", source=source)
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    with pytest.raises(Exception, match="(?i)size"):
        transformers.AutoModel.from_pretrained(out)  # pruned heads: plain transformers refuses, never loads wrongly
    reloaded, tokenizer, _ = load_encoder(out)
    ids = windows.input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).last_hidden_state, model(ids).last_hidden_state, rtol=0, atol=0)
    for p in reloaded.parameters():
        assert torch.isfinite(p).all()
    texts = ["w1 w2 w3", "w4 w5"]
    emb = sentence_embeddings(reloaded, tokenizer, texts)
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_ffn_only_encoder_pruning_loads_with_plain_transformers(windows, tmp_path, bert_tokenizer):
    model = tiny_bert()
    plan = prune_encoder_width(model, windows, ffn_ratio=0.5, progress=False)
    assert plan["per_layer_widths"] is False
    out = save_encoder(model, bert_tokenizer, tmp_path / "ffn")
    reloaded = transformers.AutoModel.from_pretrained(out).eval()
    ids = windows.input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).last_hidden_state, model(ids).last_hidden_state, rtol=0, atol=0)


def test_bad_encoder_requests_are_refused(windows):
    with pytest.raises(PrunekitError, match="every head"):
        prune_encoder_width(tiny_bert(), windows, head_ratio=0.9)
    with pytest.raises(PrunekitError, match="language-model loss"):
        prune_encoder_width(tiny_bert(), windows, ffn_ratio=0.5, criterion="taylor")
    with pytest.raises(PrunekitError, match=r"\[0, 1\)"):
        prune_encoder_width(tiny_bert(), windows, ffn_ratio=1.0)
